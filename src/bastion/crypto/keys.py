"""Bastion key identifiers and key material.

A key id looks like ``bst_`` + 24 random base62 characters + a 6-character base62 CRC32 of
those 24.  The fixed prefix lets secret scanners recognise a Bastion key; the checksum lets
Bastion reject a mistyped or invented id before any database look-up.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_PREFIX = "bst_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 24
_CHECK_LEN = 6
_KEY_ID_RE = re.compile(r"bst_[0-9A-Za-z]{30}")


class KeyFormatError(ValueError):
    """Key material or a key id is not in an accepted format."""


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def new_key_id() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return KEY_PREFIX + body + _checksum(body)


def is_valid_key_id(key_id: str) -> bool:
    """Shape and checksum only; says nothing about whether the key exists."""
    if _KEY_ID_RE.fullmatch(key_id) is None:
        return False
    body = key_id[len(KEY_PREFIX) : len(KEY_PREFIX) + _BODY_LEN]
    return secrets.compare_digest(key_id[-_CHECK_LEN:], _checksum(body))


SECRET_PREFIX = "bsk_"  # pragma: allowlist secret  # noqa: S105 - a public prefix, not a secret  # nosec B105


def new_hmac_secret() -> str:
    """A Bastion HMAC secret: ``bsk_`` + 43 URL-safe characters (256 random bits).  The HMAC
    key is the UTF-8 bytes of this whole string (RFC 9421 ``hmac-sha256``)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def generate_ed25519() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_ed25519_public(data: bytes) -> Ed25519PublicKey:
    """Load a PEM (SubjectPublicKeyInfo) or OpenSSH Ed25519 public key."""
    try:
        text = data.strip()
        key: object = (
            serialization.load_ssh_public_key(text)
            if text.startswith(b"ssh-ed25519 ")
            else serialization.load_pem_public_key(text)
        )
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM or OpenSSH public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError("the public key is not an Ed25519 key")
    return key


def load_ed25519_private(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError("the private key is not an Ed25519 key")
    return key


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600, refusing to overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
