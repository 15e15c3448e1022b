"""PKCS#11 master keys (OASIS PKCS #11 v2.40; tested with SoftHSM2).

The master key is generated inside the token as a sensitive, non-extractable AES-256 key
labelled ``bastion-master-<version>``; it never leaves the token.  Wrapping a data key is
AES-256-GCM (``CKM_AES_GCM``) performed by the token, with a random 96-bit nonce and the seal
context as associated data, so a wrapped key has the same shape as the keyfile provider's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams

from bastion.errors import ConfigError
from bastion.vault.master import UnwrapError

LABEL_PREFIX = "bastion-master-"
_NONCE_BYTES = 12


class Pkcs11MasterKey:
    def __init__(self, key: Any, version: int, *, random: Callable[[int], bytes] = os.urandom) -> None:
        self._key = key
        self.version = version
        self._random = random

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = self._random(_NONCE_BYTES)
        sealed = self._key.encrypt(
            data_key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, context)
        )
        return nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        if len(wrapped) < _NONCE_BYTES + 16:
            raise UnwrapError("wrapped key too short")
        try:
            opened = self._key.decrypt(
                wrapped[_NONCE_BYTES:],
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(wrapped[:_NONCE_BYTES], context),
            )
        except PKCS11Error:
            raise UnwrapError("wrapped key does not open") from None
        return bytes(opened)


# A PKCS#11 module is initialised once per process and never finalised while it runs
# (python-pkcs11 finalises when its library object is collected, which would log every
# session out); login state belongs to the process too: one logged-in session per token,
# shared and reference-counted.
_LIBRARIES: dict[str, Any] = {}
_SESSIONS: dict[tuple[str, str], list[Any]] = {}


def _library(path: str) -> Any:
    if path not in _LIBRARIES:
        _LIBRARIES[path] = pkcs11.lib(path)
    return _LIBRARIES[path]


class Pkcs11Token:
    """A logged-in session on the token that holds Bastion's master keys."""

    def __init__(self, library: str, token_label: str, pin: str) -> None:
        if not pin:
            raise ConfigError("the HSM PIN is missing: set BASTION_HSM_PIN")
        self._id = (library, token_label)
        shared = _SESSIONS.get(self._id)
        if shared is not None:
            shared[1] += 1
            self._session = shared[0]
            return
        try:
            token = _library(library).get_token(token_label=token_label)
            self._session = token.open(user_pin=pin, rw=True)
            _SESSIONS[self._id] = [self._session, 1]
        except (PKCS11Error, RuntimeError, OSError) as exc:
            raise ConfigError(
                f"cannot open PKCS#11 token {token_label!r} with {library}: {type(exc).__name__}"
            ) from None

    def keys(self) -> dict[int, Pkcs11MasterKey]:
        found: dict[int, Pkcs11MasterKey] = {}
        for key in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
            label = str(key.label)
            suffix = label.removeprefix(LABEL_PREFIX)
            if label.startswith(LABEL_PREFIX) and suffix.isdigit():
                found[int(suffix)] = Pkcs11MasterKey(key, int(suffix))
        return found

    def create(self, version: int) -> Pkcs11MasterKey:
        if version in self.keys():
            raise ConfigError(f"the token already holds master key version {version}")
        key = self._session.generate_key(
            KeyType.AES,
            256,
            label=f"{LABEL_PREFIX}{version}",
            store=True,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            },
        )
        return Pkcs11MasterKey(key, version)

    def close(self) -> None:
        shared = _SESSIONS.get(self._id)
        if shared is None:
            return
        shared[1] -= 1
        if shared[1] == 0:
            del _SESSIONS[self._id]
            self._session.close()
