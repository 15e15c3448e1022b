"""RFC 9530 Content-Digest."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto.digest import DigestError, content_digest, verify_content_digest

# RFC 9530 §2 and RFC 9421 appendix B use this body and digest.
BODY = b'{"hello": "world"}'
DIGEST = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_known_answer() -> None:
    assert content_digest(BODY) == DIGEST
    verify_content_digest(DIGEST, BODY)


def test_sha512_member_is_checked_too() -> None:
    verify_content_digest(DIGEST + ", unknown=:AAAA:", BODY)
    with pytest.raises(DigestError):
        verify_content_digest(DIGEST + ", sha-512=:AAAA:", BODY)


@pytest.mark.parametrize(
    "header",
    ["", "sha-512=:AAAA:", "sha-256=AAAA", "sha-256=:AAAA:", "sha-256=:X48E9q:, sha-256", "nonsense(("],
)
def test_rejects_missing_malformed_or_wrong(header: str) -> None:
    with pytest.raises(DigestError):
        verify_content_digest(header, BODY)


def test_changed_body_fails() -> None:
    with pytest.raises(DigestError):
        verify_content_digest(DIGEST, BODY + b" ")


@given(st.text(max_size=200), st.binary(max_size=64))
def test_parser_raises_only_digest_error(header: str, body: bytes) -> None:
    with contextlib.suppress(DigestError):
        verify_content_digest(header, body)
