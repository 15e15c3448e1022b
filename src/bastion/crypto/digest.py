"""Digest Fields, RFC 9530 — the ``Content-Digest`` request header.

https://www.rfc-editor.org/rfc/rfc9530

Bastion accepts ``sha-256`` (required) and checks it against the exact body bytes.
``sha-512`` members are checked too when present; unknown algorithms are ignored as §2 allows,
but at least one supported member must be present.
"""

from __future__ import annotations

import hashlib
import hmac

from bastion.crypto import sfv

_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


class DigestError(ValueError):
    """The Content-Digest header is malformed or does not match the body."""


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` value for ``body`` (sha-256)."""
    return sfv.serialize_bare_item(hashlib.sha256(body).digest()).join(("sha-256=", ""))


def verify_content_digest(header: str, body: bytes) -> None:
    """Raise :class:`DigestError` unless ``header`` carries a matching sha-256 digest of ``body``."""
    try:
        members = sfv.parse_dictionary(header)
    except sfv.SFVError as exc:
        raise DigestError(f"malformed Content-Digest: {exc}") from None
    if "sha-256" not in members:
        raise DigestError("Content-Digest has no sha-256 member")
    for name, member in members.items():
        algorithm = _ALGORITHMS.get(name)
        if algorithm is None:
            continue
        if not isinstance(member, sfv.Item) or not isinstance(member.value, bytes):
            raise DigestError(f"Content-Digest member {name} is not a byte sequence")
        if not hmac.compare_digest(member.value, algorithm(body).digest()):
            raise DigestError(f"Content-Digest {name} does not match the body")
