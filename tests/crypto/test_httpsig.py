"""RFC 9421: the appendix B.2.6 known answer, our signer, and an independent signer."""

from __future__ import annotations

import base64
import contextlib
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from requests_http_signature import HTTPSignatureAuth, algorithms

from bastion.crypto import httpsig, sfv
from bastion.crypto.keys import private_key_pem
from bastion.errors import SignatureError


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# RFC 9421 appendix B.1.4 (test-key-ed25519) and B.2.6.
RFC_SEED = _b64url("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU")
RFC_PUBLIC = _b64url("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
# pragma: allowlist nextline secret - RFC 9421 B.2.6, a published test vector
B26_SIGNATURE = "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B2_REQUEST = httpsig.RequestView(
    method="POST",
    scheme="https",
    authority="example.com",
    path="/foo",
    query="param=Value&Pet=dog",
    headers={
        "host": ["example.com"],
        "date": ["Tue, 20 Apr 2021 02:07:55 GMT"],
        "content-type": ["application/json"],
        "content-length": ["18"],
    },
)


def test_rfc9421_b26_signature_base_and_signature() -> None:
    member = sfv.parse_dictionary(B26_INPUT)["sig-b26"]
    assert isinstance(member, sfv.InnerList)
    components = tuple(str(i.value) for i in member.items)
    base = httpsig.signature_base(components, sfv.serialize_inner_list(member), B2_REQUEST)
    assert base.decode() == B26_BASE
    key = Ed25519PrivateKey.from_private_bytes(RFC_SEED)
    assert key.public_key().public_bytes_raw() == RFC_PUBLIC
    assert base64.b64encode(key.sign(base)).decode() == B26_SIGNATURE
    httpsig.verify_ed25519(key.public_key(), base, base64.b64decode(B26_SIGNATURE))
    with pytest.raises(SignatureError):
        httpsig.verify_ed25519(key.public_key(), base + b" ", base64.b64decode(B26_SIGNATURE))


def test_rfc9421_derived_components_of_the_b2_request() -> None:
    # RFC 9421 §2.2 examples for the same request (with https as scheme here).
    base = httpsig.signature_base(
        ("@target-uri", "@request-target", "@query", "@scheme"), "()", B2_REQUEST
    ).decode()
    assert base.splitlines()[:4] == [
        '"@target-uri": https://example.com/foo?param=Value&Pet=dog',
        '"@request-target": /foo?param=Value&Pet=dog',
        '"@query": ?param=Value&Pet=dog',
        '"@scheme": https',
    ]


def _headers_from(prepared: requests.PreparedRequest) -> dict[str, list[str]]:
    return {k.lower(): [v] for k, v in prepared.headers.items()}


def _verify_view(view: httpsig.RequestView, public: Ed25519PrivateKey) -> httpsig.ParsedSignature:
    parsed = httpsig.parse_signature(view.headers)
    base = httpsig.signature_base(parsed.components, parsed.params_text, view)
    httpsig.verify_ed25519(public.public_key(), base, parsed.signature)
    return parsed


def test_independent_signer_requests_http_signature_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    auth = HTTPSignatureAuth(
        signature_algorithm=algorithms.ED25519,
        key=private_key_pem(key),
        key_id="bst_test",
        use_nonce=True,
        covered_component_ids=("@method", "@authority", "@target-uri", "content-digest"),
    )
    prepared = requests.Request(
        "POST",
        "https://127.0.0.1:8443/v1/orders?x=1",
        data=b'{"a":1}',
        headers={"Content-Type": "application/json"},
    ).prepare()
    auth(prepared)
    view = httpsig.RequestView(
        "POST", "https", "127.0.0.1:8443", "/v1/orders", "x=1", _headers_from(prepared)
    )
    parsed = _verify_view(view, key)
    assert parsed.keyid == "bst_test"
    assert parsed.alg == "ed25519"
    assert {"@method", "@authority", "@target-uri", "content-digest"} <= set(parsed.components)
    # The same request aimed at another path does not verify.
    moved = httpsig.RequestView("POST", "https", "127.0.0.1:8443", "/v1/orderz", "x=1", view.headers)
    with pytest.raises(SignatureError):
        _verify_view(moved, key)


def test_our_signer_round_trip_and_tamper() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"q":"1"}'
    headers = httpsig.sign_request(
        private_key=key,
        key_id="bst_k",
        method="POST",
        url_scheme="https",
        authority="h:1",
        path="/v1/orders",
        query="",
        body=body,
        created=int(time.time()),
    )
    view = httpsig.RequestView("POST", "https", "h:1", "/v1/orders", "", {k: [v] for k, v in headers.items()})
    parsed = _verify_view(view, key)
    assert parsed.components == ("@method", "@target-uri", "content-digest")
    tampered = dict(view.headers) | {"content-digest": ["sha-256=:AAAA:"]}
    with pytest.raises(SignatureError):
        _verify_view(httpsig.RequestView("POST", "https", "h:1", "/v1/orders", "", tampered), key)
    with pytest.raises(SignatureError):  # another method
        _verify_view(httpsig.RequestView("PUT", "https", "h:1", "/v1/orders", "", view.headers), key)


def _params(**extra: str) -> str:
    fields = {"created": "1", "keyid": '"bst_k"', "nonce": '"' + "n" * 22 + '"'} | extra
    return "".join(f";{k}={v}" for k, v in fields.items())


@pytest.mark.parametrize(
    ("signature_input", "signature"),
    [
        (None, "s=:AAAA:"),
        ('s=("@method")' + _params(), None),
        ('s=("@method")' + _params(), "t=:AAAA:"),
        ('s=("@method")' + _params() + ', t=("@method")' + _params(), "s=:AAAA:, t=:AAAA:"),
        ('s=("@method");created=1;keyid="k"', "s=:AAAA:"),  # no nonce
        ('s=("@method");nonce="' + "n" * 22 + '";keyid="k"', "s=:AAAA:"),  # no created
        ('s=("@method");created=1;nonce="' + "n" * 22 + '"', "s=:AAAA:"),  # no keyid
        ('s=("@method")' + _params(nonce='"short"'), "s=:AAAA:"),
        ('s=("@method")' + _params(alg='"rsa-pss-sha512"'), "s=:AAAA:"),
        ('s=("@method" "@method")' + _params(), "s=:AAAA:"),
        ('s=("@status")' + _params(), "s=:AAAA:"),
        ('s=("content-digest";sf)' + _params(), "s=:AAAA:"),
        ('s=("Date")' + _params(), "s=:AAAA:"),
        ('s=("@method")' + _params(), 's="notbytes"'),
        ("s=1", "s=:AAAA:"),
    ],
)
def test_parse_signature_refuses(signature_input: str | None, signature: str | None) -> None:
    headers: dict[str, list[str]] = {}
    if signature_input is not None:
        headers["signature-input"] = [signature_input]
    if signature is not None:
        headers["signature"] = [signature]
    with pytest.raises(SignatureError):
        httpsig.parse_signature(headers)


def test_repeated_signature_headers_are_refused() -> None:
    line = 's=("@method")' + _params()
    with pytest.raises(SignatureError):
        httpsig.parse_signature({"signature-input": [line, line], "signature": ["s=:AAAA:"]})


@given(st.text(max_size=200), st.text(max_size=200))
def test_parse_signature_raises_only_signature_error(signature_input: str, signature: str) -> None:
    with contextlib.suppress(SignatureError):
        httpsig.parse_signature({"signature-input": [signature_input], "signature": [signature]})


def test_covered_header_must_be_present() -> None:
    with pytest.raises(SignatureError):
        httpsig.signature_base(("x-missing",), "()", B2_REQUEST)


def test_hmac_sha256_verification() -> None:
    import hashlib
    import hmac

    secret = b"s3cret-for-test"
    base = b"base"
    good = hmac.new(secret, base, hashlib.sha256).digest()
    httpsig.verify_hmac_sha256(secret, base, good)
    with pytest.raises(SignatureError):
        httpsig.verify_hmac_sha256(secret, base, bytes(32))
