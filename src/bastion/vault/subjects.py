"""Personal data in ledger entries, sealed per subject (crypto-shredding).

Each subject (an account, or a day's unauthenticated callers) has its own random 256-bit data
key, itself sealed by the vault's master key and stored in ``subject_keys``.  A personal value
(an address, a free-text label) enters a ledger entry only as::

    "pd1:" + base64(nonce[12] || AES-256-GCM(key, value, aad = subject || 0x00 || field))

so the ledger's bytes, hashes and proofs never depend on being able to read it.  Erasing a
subject (``bastion accounts erase``) destroys its key: every value it sealed stays in the
ledger, still verifying, and never opens again.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.vault.envelope import SealContext, VaultError, open_secret, seal_secret
from bastion.vault.master import MasterKeyRing

PREFIX = "pd1:"
ERASED = "[erased]"


def subject_context(subject: str) -> SealContext:
    return SealContext("", subject, "personal-data-key")


class SubjectKeyStore(Protocol):
    """The ``subject_keys`` rows (``store/repos.py``)."""

    async def load(self, subject: str) -> tuple[bool, bytes | None]:
        """(exists, the sealed key, or None once erased)."""
        ...

    async def create(self, subject: str, sealed: bytes, now: datetime) -> bool:
        """False (nothing written) when the subject has a row already."""
        ...

    async def erase(self, subject: str, now: datetime) -> bool: ...


class SubjectKeys:
    def __init__(self, store: SubjectKeyStore, ring: MasterKeyRing) -> None:
        self._store = store
        self._ring = ring
        self._keys: dict[str, AESGCM | None] = {}  # None: erased

    def set_ring(self, ring: MasterKeyRing) -> None:
        self._ring = ring

    async def key(self, subject: str, now: datetime) -> AESGCM | None:
        """The subject's key (made on first use), or None when the subject was erased."""
        if subject in self._keys:
            return self._keys[subject]
        exists, sealed = await self._store.load(subject)
        if not exists:
            raw = AESGCM.generate_key(bit_length=256)
            await self._store.create(subject, seal_secret(self._ring, raw, subject_context(subject)), now)
            exists, sealed = await self._store.load(subject)  # another process may have made it first
        found = None if sealed is None else AESGCM(open_secret(self._ring, sealed, subject_context(subject)))
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[subject] = found
        return found

    def seal(self, key: AESGCM | None, subject: str, field: str, value: str) -> str:
        if key is None:
            return ERASED  # an erased subject's new data is not kept at all
        nonce = os.urandom(12)
        sealed = key.encrypt(nonce, value.encode(), subject.encode() + b"\x00" + field.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    async def open(self, subject: str, field: str, token: str, now: datetime) -> str:
        """The plain value, or ``[erased]``; raises VaultError for a token that is not ours."""
        if token == ERASED:
            return ERASED
        if not token.startswith(PREFIX):
            raise VaultError()
        key = await self.key(subject, now)
        if key is None:
            return ERASED
        try:
            blob = base64.b64decode(token[len(PREFIX) :], validate=True)
            return key.decrypt(blob[:12], blob[12:], subject.encode() + b"\x00" + field.encode()).decode()
        except (ValueError, InvalidTag):
            raise VaultError() from None

    async def erase(self, subject: str, now: datetime) -> bool:
        erased = await self._store.erase(subject, now)
        self._keys[subject] = None
        return erased

    def forget(self, subject: str) -> None:
        """Drop a cached key (another process erased the subject)."""
        self._keys.pop(subject, None)
