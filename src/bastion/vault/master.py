"""Master keys: the ``MasterKey`` port (wrap and unwrap data keys) and the keyfile provider.

A master key never leaves its provider: callers hand it a data key to wrap and get a blob
back.  Providers are versioned so the master key can rotate while old wrapped keys still
open; a :class:`MasterKeyRing` holds the versions, seals with the newest.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bastion.crypto.keys import write_secret_file
from bastion.errors import ConfigError

KEY_BYTES = 32
_NONCE_BYTES = 12


class UnwrapError(Exception):
    """A wrapped data key did not open (its caller turns this into the opaque VaultError)."""


class MasterKey(Protocol):
    version: int

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


_SEALED_MAGIC = b"BVKP1"
_SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P = 15, 8, 1  # 32 MiB of memory, a fraction of a second: once at start


def _passphrase_key(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=2**log_n, r=r, p=p).derive(passphrase)


def _seal_keyfile(key: bytes, passphrase: bytes) -> bytes:
    """``BVKP1 | log2(n) r p | salt(16) | nonce(12) | AES-256-GCM(key)`` with the header as
    associated data; the key-encryption key comes from scrypt over the passphrase."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = _SEALED_MAGIC + bytes([_SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P]) + salt
    kek = _passphrase_key(passphrase, salt, _SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P)
    return header + nonce + AESGCM(kek).encrypt(nonce, key, header)


def _open_keyfile(data: bytes, passphrase: bytes | None, path: Path) -> bytes:
    if not data.startswith(_SEALED_MAGIC):
        if len(data) != KEY_BYTES:
            raise ConfigError(f"master keyfile {path} must hold exactly {KEY_BYTES} bytes")
        return data
    if not passphrase:
        raise ConfigError(
            f"master keyfile {path} is sealed under a passphrase: set BASTION_MASTER_PASSPHRASE"
        )
    header_end = len(_SEALED_MAGIC) + 3 + 16
    if len(data) != header_end + 12 + KEY_BYTES + 16:
        raise ConfigError(f"master keyfile {path} is damaged")
    log_n, r, p = data[len(_SEALED_MAGIC) : len(_SEALED_MAGIC) + 3]
    if not (14 <= log_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ConfigError(f"master keyfile {path} has unacceptable KDF parameters")
    kek = _passphrase_key(passphrase, data[header_end - 16 : header_end], log_n, r, p)
    try:
        return AESGCM(kek).decrypt(
            data[header_end : header_end + 12], data[header_end + 12 :], data[:header_end]
        )
    except InvalidTag:
        raise ConfigError(f"wrong passphrase for master keyfile {path}") from None


class KeyfileMasterKey:
    """A 256-bit master key in a file readable by its owner only, optionally sealed under a
    passphrase (scrypt, then AES-256-GCM).  Wrapping is AES-256-GCM with a random nonce and
    the seal context as associated data."""

    def __init__(
        self,
        path: Path,
        version: int,
        *,
        passphrase: bytes | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if version < 1:
            raise ConfigError("master key versions start at 1")
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise ConfigError(f"master keyfile {path} is missing: run 'bastion init'") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"master keyfile {path} is readable by group or others: chmod 600 it")
        key = _open_keyfile(path.read_bytes(), passphrase, path)
        self.version = version
        self._aead = AESGCM(key)
        self._random = random

    @staticmethod
    def create(path: Path, passphrase: bytes | None = None) -> None:
        """Write a new random key to ``path`` (mode 0600, never overwriting), sealed under
        ``passphrase`` when one is given."""
        key = secrets.token_bytes(KEY_BYTES)
        write_secret_file(path, _seal_keyfile(key, passphrase) if passphrase else key)

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = self._random(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        if len(wrapped) < _NONCE_BYTES + 16:
            raise UnwrapError("wrapped key too short")
        try:
            return self._aead.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], context)
        except InvalidTag:
            raise UnwrapError("wrapped key does not open") from None


class MasterKeyRing:
    """All master-key versions in use; the newest seals, any opens what it sealed.  With a
    ``loader``, a version this ring has not seen is looked up on demand, so a running server
    opens secrets that a concurrent rotation re-sealed under a new master key."""

    def __init__(
        self, keys: Mapping[int, MasterKey], loader: Callable[[int], MasterKey | None] | None = None
    ) -> None:
        if not keys:
            raise ConfigError("the vault needs at least one master key")
        for version, key in keys.items():
            if key.version != version:
                raise ConfigError(f"master key registered as version {version} says {key.version}")
        self._keys = dict(keys)
        self._loader = loader
        self.current = self._keys[max(self._keys)]

    def get(self, version: int) -> MasterKey | None:
        key = self._keys.get(version)
        if key is None and self._loader is not None:
            key = self._loader(version)
            if key is not None:
                self._keys[version] = key
        return key

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys)


def keyfile_versions(directory: Path) -> list[int]:
    return sorted(
        int(p.stem.removeprefix("master-"))
        for p in directory.glob("master-*.key")
        if p.stem.removeprefix("master-").isdigit()
    )


def open_ring(
    directory: Path, token: TokenKeys | None = None, *, passphrase: bytes | None = None
) -> MasterKeyRing:
    """Keyfile versions in ``directory`` plus, with a token, the versions it holds; versions
    created later (by a concurrent rotation) load on first use."""
    keys: dict[int, MasterKey] = {
        v: KeyfileMasterKey(directory / f"master-{v}.key", v, passphrase=passphrase)
        for v in keyfile_versions(directory)
    }
    if token is not None:
        held = token.keys()
        clash = sorted(set(held) & set(keys))
        if clash:
            raise ConfigError(f"master key versions {clash} exist both as keyfiles and in the token")
        keys.update(held)
    if not keys:
        raise ConfigError(f"no master key in {directory}: run 'bastion init'")

    def load(version: int) -> MasterKey | None:
        path = directory / f"master-{version}.key"
        if path.is_file():
            return KeyfileMasterKey(path, version, passphrase=passphrase)
        return token.keys().get(version) if token is not None else None

    return MasterKeyRing(keys, load)


def create_next_keyfile(directory: Path, version: int, passphrase: bytes | None = None) -> None:
    """Write master-key version ``version`` as a keyfile."""
    KeyfileMasterKey.create(directory / f"master-{version}.key", passphrase)


class TokenKeys(Protocol):
    """An HSM token holding master-key versions (``vault.pkcs11.Pkcs11Token``)."""

    def keys(self) -> Mapping[int, MasterKey]: ...

    def create(self, version: int) -> MasterKey: ...

    def close(self) -> None: ...
