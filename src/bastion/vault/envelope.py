"""Sealing and opening secrets (envelope encryption).

Sealed format, version 1 (all integers big-endian)::

    "BV1"                 3 bytes  magic and format version
    master_version        4 bytes  which master key wrapped the data key
    wrapped_length        2 bytes
    wrapped_data_key      wrapped_length bytes (the master key's own format)
    nonce                 12 bytes
    ciphertext || tag     AES-256-GCM under the data key

The associated data of the secret's encryption is the header (everything before the nonce)
followed by the encoded :class:`SealContext`; the wrapped data key is bound to the same
context.  A sealed value copied to another row, edited, truncated or re-headed fails to open.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.errors import BastionError
from bastion.vault.master import KEY_BYTES, MasterKeyRing, UnwrapError

MAGIC = b"BV1"
_NONCE_BYTES = 12
_HEADER_FIXED = len(MAGIC) + 4 + 2


class VaultError(BastionError):
    """A sealed secret could not be opened.  Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("the sealed secret could not be opened")


@dataclass(frozen=True, slots=True)
class SealContext:
    """Where a secret lives; part of what it is sealed to."""

    account: str
    owner_id: str
    purpose: str

    def encode(self) -> bytes:
        parts = [p.encode() for p in ("bastion-vault-v1", self.account, self.owner_id, self.purpose)]
        return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def seal_secret(
    ring: MasterKeyRing,
    plaintext: bytes,
    context: SealContext,
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> bytes:
    data_key = random(KEY_BYTES)
    bound = context.encode()
    master = ring.current
    wrapped = master.wrap(data_key, b"dek" + bound)
    header = MAGIC + master.version.to_bytes(4, "big") + len(wrapped).to_bytes(2, "big") + wrapped
    nonce = random(_NONCE_BYTES)
    return header + nonce + AESGCM(data_key).encrypt(nonce, plaintext, header + bound)


def open_secret(ring: MasterKeyRing, sealed: bytes, context: SealContext) -> bytes:
    try:
        if len(sealed) < _HEADER_FIXED or sealed[:3] != MAGIC:
            raise VaultError
        version = int.from_bytes(sealed[3:7], "big")
        wrapped_length = int.from_bytes(sealed[7:9], "big")
        header_end = _HEADER_FIXED + wrapped_length
        if len(sealed) < header_end + _NONCE_BYTES + 16:
            raise VaultError
        master = ring.get(version)
        if master is None:
            raise VaultError
        bound = context.encode()
        data_key = master.unwrap(sealed[_HEADER_FIXED:header_end], b"dek" + bound)
        nonce = sealed[header_end : header_end + _NONCE_BYTES]
        return AESGCM(data_key).decrypt(
            nonce, sealed[header_end + _NONCE_BYTES :], sealed[:header_end] + bound
        )
    except (UnwrapError, InvalidTag, ValueError):
        raise VaultError from None


def master_version(sealed: bytes) -> int:
    """Which master-key version a sealed value needs (for rotation); VaultError if malformed."""
    if len(sealed) < _HEADER_FIXED or sealed[:3] != MAGIC:
        raise VaultError
    return int.from_bytes(sealed[3:7], "big")
