"""Property-based fuzzing of the parsers that take untrusted input (issue 9).

Already fuzzed where the parsers are tested, and not repeated here: arbitrary text into
``parse_signature`` (tests/crypto/test_httpsig.py), into ``verify_content_digest``
(test_digest.py) and ``sfv.parse_dictionary`` with inner-list round trips (test_sfv.py),
arbitrary text into ``parse_decimal`` and decimal round trips (tests/domain/test_money.py),
arbitrary decoded mappings and arbitrary bytes into the policy loader
(tests/domain/test_policy.py).  Arbitrary text seldom gets past the structured-field syntax,
or past YAML, so the inputs here are structured: well-formed fields with hostile contents,
signed requests changed one part at a time, validators held against the documented patterns
(JSON Schema patterns are ECMA-262: ``^...$`` never accepts a final newline) and against each
other, and policy documents the loader accepts put to use.

The tests marked ``xfail(strict=True)`` pin findings (docs/security-testing.md): each has an
``@example`` that fails today; once its fix lands the test passes, strict xfail fails the
suite, and the marker goes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import string
from decimal import Decimal

import msgspec
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.crypto import httpsig, sfv
from bastion.crypto.digest import DigestError, content_digest, verify_content_digest
from bastion.domain.money import DecimalFormatError, format_decimal, parse_decimal
from bastion.domain.orders import OrderRequest
from bastion.domain.policy import FIELDS, document_from, effective, parse_document, to_mapping
from bastion.domain.principals import Scope
from bastion.errors import PolicyError, SignatureError
from bastion.pipeline.firewall import to_order_request
from bastion.schema import DECIMAL_PATTERN, SYMBOL_PATTERN, ListOrdersQuery, PlaceOrder

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)


# -- Signature-Input and Signature (RFC 9421 over RFC 8941) ------------------------------------
_COMPONENT_NAMES = [
    *sorted(httpsig.DERIVED),
    "content-digest",
    "content-type",
    "x-anything",
    "@status",
    "@query-param",
    "@signature-params",
    "@METHOD",
    "Content-Digest",
    "",
]
_keys = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
_bare = st.one_of(
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
    _PRINTABLE,
    st.binary(max_size=16),
    st.booleans(),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9:/*.]{0,8}", fullmatch=True).map(sfv.Token),
)
# The nonce alphabet and a few printable characters outside it (sf-strings are printable ASCII).
_nonce = st.text(alphabet="".join(sorted(httpsig._NONCE_CHARS)) + ' #"*\\', min_size=0, max_size=140)
_valid_nonce = st.from_regex(r"[A-Za-z0-9_-]{16,128}", fullmatch=True)
# Each value mostly what a signer sends, else anything: so parses get past the first refusal.
_param_values = {
    "keyid": st.one_of(st.just("bst_key"), st.just("bst_key"), _bare),
    "created": st.one_of(st.integers(min_value=0, max_value=10**12), st.integers(0, 10**12), _bare),
    "nonce": st.one_of(_valid_nonce, _valid_nonce, _nonce, _bare),
    "alg": st.one_of(st.sampled_from(["ed25519", "hmac-sha256", "rsa-pss-sha512", "none", "ED25519"]), _bare),
    "expires": st.one_of(st.integers(min_value=0, max_value=10**12), _bare),
}
_required = ("keyid", "created", "nonce")
_signature_params = st.one_of(
    st.fixed_dictionaries(
        {k: _param_values[k] for k in _required},
        optional={"alg": _param_values["alg"], "expires": _param_values["expires"], "tag": _bare},
    ),
    st.fixed_dictionaries({}, optional={**_param_values, "tag": _bare, "xkeyid": _bare}),
)
_valid_component = st.builds(
    sfv.Item, st.sampled_from([*sorted(httpsig.DERIVED), "content-digest", "content-type"]), st.just({})
)
_any_component = st.builds(
    sfv.Item,
    st.one_of(st.sampled_from(_COMPONENT_NAMES), _bare),
    st.one_of(st.just({}), st.dictionaries(_keys, _bare, max_size=2)),
)
_component = st.one_of(_valid_component, _valid_component, _valid_component, _any_component)
_inner = st.builds(
    sfv.InnerList,
    st.one_of(
        st.lists(_component, max_size=18, unique_by=lambda item: repr(item.value)),
        st.lists(_component, max_size=18),
    ).map(tuple),
    _signature_params,
)


def _member(label: str, member: sfv.Member) -> str:
    if isinstance(member, sfv.InnerList):
        return f"{label}={sfv.serialize_inner_list(member)}"
    return f"{label}={sfv.serialize_item(member)}"


@FUZZ
@given(
    label=_keys,
    inner=_inner,
    other_inputs=st.dictionaries(_keys, _inner | st.builds(sfv.Item, _bare, st.just({})), max_size=2),
    signature_label=_keys,
    signature=st.builds(sfv.Item, st.one_of(st.binary(min_size=1, max_size=64), _bare), st.just({})),
    same_label=st.booleans(),
)
def test_well_formed_fields_are_parsed_only_within_the_rules(
    label: str,
    inner: sfv.InnerList,
    other_inputs: dict[str, sfv.Member],
    signature_label: str,
    signature: sfv.Item,
    same_label: bool,
) -> None:
    """Syntactically valid fields of every shape: either SignatureError, or a signature that
    keeps every rule parse_signature promises (exactly one, labels equal, known lower-case
    components at most once, at most 16, keyid, integer created, a well-formed nonce, a
    supported alg)."""
    inputs = {label: inner} | {k: v for k, v in other_inputs.items() if k != label}
    sig_label = label if same_label else signature_label
    headers = {
        "signature-input": [", ".join(_member(k, v) for k, v in inputs.items())],
        "signature": [_member(sig_label, signature)],
    }
    try:
        parsed = httpsig.parse_signature(headers)
    except SignatureError:
        return
    assert len(inputs) == 1 and sig_label == label == parsed.label
    assert parsed.signature == signature.value and isinstance(parsed.signature, bytes)
    assert len(parsed.components) == len(set(parsed.components)) <= 16
    for name in parsed.components:
        assert name == name.lower() and (not name.startswith("@") or name in httpsig.DERIVED)
    assert isinstance(parsed.keyid, str) and type(parsed.created) is int
    assert 16 <= len(parsed.nonce) <= 128 and set(parsed.nonce) <= httpsig._NONCE_CHARS
    assert parsed.alg in (None, httpsig.ED25519, httpsig.HMAC_SHA256)
    assert parsed.expires is None or type(parsed.expires) is int
    assert parsed.params_text == sfv.serialize_inner_list(inner)


_KEY = Ed25519PrivateKey.generate()
_path = st.from_regex(r"/[A-Za-z0-9/._~%-]{0,40}", fullmatch=True)
_query = st.text(alphabet=string.ascii_letters + string.digits + "=&%._~-+", max_size=40)
_method = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"])


def _verify(view: httpsig.RequestView) -> None:
    parsed = httpsig.parse_signature(view.headers)
    base = httpsig.signature_base(parsed.components, parsed.params_text, view)
    httpsig.verify_ed25519(_KEY.public_key(), base, parsed.signature)


@FUZZ
@given(
    method=_method,
    path=_path,
    query=_query,
    body=st.binary(max_size=200),
    change=st.sampled_from(["method", "path", "query", "authority", "scheme", "body", "created"]),
    data=st.data(),
)
def test_a_signed_request_verifies_and_no_changed_one_does(
    method: str, path: str, query: str, body: bytes, change: str, data: st.DataObject
) -> None:
    headers = httpsig.sign_request(
        private_key=_KEY,
        key_id="bst_fuzz",
        method=method,
        url_scheme="https",
        authority="127.0.0.1:8443",
        path=path,
        query=query,
        body=body,
        created=1_700_000_000,
    )
    fields = {k: [v] for k, v in headers.items()}
    view = httpsig.RequestView(method, "https", "127.0.0.1:8443", path, query, fields)
    _verify(view)
    if body:
        verify_content_digest(headers["content-digest"], body)
    parts = {"method": method, "scheme": "https", "authority": "127.0.0.1:8443", "path": path, "query": query}
    if change == "body":
        other = data.draw(st.binary(max_size=200).filter(lambda b: b != body), label="other body")
        if body:  # the signature covers the digest; the digest must not match another body
            with pytest.raises(DigestError):
                verify_content_digest(headers["content-digest"], other)
        return
    if change == "created":
        text = fields["signature-input"][0].replace("created=1700000000", "created=1700000001")
        changed = httpsig.RequestView(
            method, "https", "127.0.0.1:8443", path, query, fields | {"signature-input": [text]}
        )
    else:
        alternatives = {
            "method": _method,
            "path": _path,
            "query": _query,
            "authority": st.sampled_from(["127.0.0.1:8444", "127.0.0.2:8443", "evil.example"]),
            "scheme": st.just("http"),
        }
        new = data.draw(alternatives[change].filter(lambda v: v != parts[change]), label=change)
        parts = parts | {change: new}
        changed = httpsig.RequestView(
            parts["method"], parts["scheme"], parts["authority"], parts["path"], parts["query"], fields
        )
    with pytest.raises(SignatureError):
        _verify(changed)


@FUZZ
@given(
    value=st.text(max_size=40),
    covered=st.lists(
        st.sampled_from(["content-digest", "content-type", "x-a"]), min_size=1, max_size=3, unique=True
    ),
)
def test_a_covered_value_can_never_add_lines_to_the_signature_base(value: str, covered: list[str]) -> None:
    """A header value with a line break (or outside ASCII) would let a sender forge extra
    component lines; the base refuses it, and otherwise has exactly one line per component."""
    view = httpsig.RequestView("GET", "https", "h", "/", "", {name: [value] for name in covered})
    params = '();created=1;keyid="k";nonce="' + "n" * 20 + '"'
    try:
        base = httpsig.signature_base(covered, params, view)
    except SignatureError:
        assert any(c in value for c in "\r\n") or not value.isascii()
        return
    assert base.count(b"\n") == len(covered)
    assert base.isascii()


# -- Content-Digest (RFC 9530) -----------------------------------------------------------------
@FUZZ
@given(body=st.binary(max_size=300), other=st.binary(max_size=300))
def test_a_digest_verifies_its_body_and_no_other(body: bytes, other: bytes) -> None:
    header = content_digest(body)
    verify_content_digest(header, body)
    if other != body:
        with pytest.raises(DigestError):
            verify_content_digest(header, other)


_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


@FUZZ
@given(
    body=st.binary(max_size=100),
    members=st.dictionaries(
        st.sampled_from(["sha-256", "sha-512", "md5", "id-sha-256", "unixsum", "sha"]),
        st.sampled_from(["right", "wrong", "empty", "integer", "string", "token", "inner", "right+param"]),
        max_size=4,
    ),
)
def test_a_digest_field_is_judged_by_its_supported_members(body: bytes, members: dict[str, str]) -> None:
    """Oracle: accepted iff there is a sha-256 member and every sha-256 or sha-512 member is a
    byte sequence equal to the body's digest (unknown algorithms are ignored, RFC 9530 §2)."""
    text = []
    for name, kind in members.items():
        right = _ALGORITHMS[name](body).digest() if name in _ALGORITHMS else hashlib.md5(body).digest()  # noqa: S324
        value = {
            "right": sfv.serialize_bare_item(right),
            "right+param": sfv.serialize_bare_item(right) + ";x=1",
            "wrong": sfv.serialize_bare_item(bytes(b ^ 1 for b in right)),
            "empty": "::",
            "integer": "42",
            "string": '"' + base64.b64encode(right).decode() + '"',
            "token": "sha",
            "inner": "(" + sfv.serialize_bare_item(right) + ")",
        }[kind]
        text.append(f"{name}={value}")
    header = ", ".join(text)
    supported_ok = all(
        kind in ("right", "right+param") for name, kind in members.items() if name in _ALGORITHMS
    )
    expected = "sha-256" in members and supported_ok
    try:
        verify_content_digest(header, body)
    except DigestError:
        assert not expected, header
    else:
        assert expected, header


# -- decimals and symbols: the parsers against the documented patterns ---------------------------
def _documented(pattern: str, text: str) -> bool:
    """ECMA-262 semantics of an anchored JSON Schema pattern: the whole string, no final newline."""
    return re.fullmatch(pattern, text) is not None


_decimal_like = st.one_of(
    st.from_regex(DECIMAL_PATTERN, fullmatch=True),
    st.from_regex(DECIMAL_PATTERN),  # re.search semantics: a final newline, for one
    st.text(alphabet="0123456789.-+eE_ ,١٢", max_size=44),
    st.text(max_size=30),
)


@FUZZ
@given(_decimal_like)
def test_the_decimal_parser_accepts_exactly_the_documented_pattern(text: str) -> None:
    try:
        value = parse_decimal(text)
    except DecimalFormatError:
        assert not _documented(DECIMAL_PATTERN, text)
        return
    assert _documented(DECIMAL_PATTERN, text)
    assert value == Decimal(text) and value >= 0 and value.is_finite()


@pytest.mark.xfail(
    strict=True,
    reason="finding: format_decimal normalises in the default 28-digit context, so a decimal the API "
    "accepts (up to 38 digits) is rendered rounded: in answers, ledger entries and order fingerprints",
)
@FUZZ
@given(st.from_regex(DECIMAL_PATTERN, fullmatch=True))
@example("1000000000000000000.0000000001")
def test_every_accepted_decimal_is_rendered_back_exactly(text: str) -> None:
    value = parse_decimal(text)
    assert parse_decimal(format_decimal(value)) == value


def _order_body(**fields: object) -> bytes:
    body = {"client_order_id": "c-1", "symbol": "GOOG", "side": "buy", "type": "limit"}
    return json.dumps(body | {"quantity": "1", "price": "1"} | fields).encode()


@FUZZ
@given(quantity=_decimal_like, price=_decimal_like)
@example(quantity="1\n", price="1")
def test_every_order_the_schema_accepts_becomes_an_order_or_a_reason(quantity: str, price: str) -> None:
    try:
        body = msgspec.json.decode(_order_body(quantity=quantity, price=price), type=PlaceOrder)
    except msgspec.ValidationError:
        return
    assert isinstance(to_order_request(body), OrderRequest | str)


_symbol_like = st.one_of(
    st.from_regex(SYMBOL_PATTERN, fullmatch=True),
    st.text(alphabet=string.ascii_uppercase + string.digits + "-_. abc/١", max_size=28),
    st.text(max_size=16),
)


def _body_accepts(symbol: str) -> bool:
    try:
        msgspec.json.decode(_order_body(symbol=symbol), type=PlaceOrder)
    except msgspec.ValidationError:
        return False
    return True


def _query_accepts(symbol: str) -> bool:
    try:  # as the firewall converts a query string
        msgspec.convert({"symbol": symbol}, type=ListOrdersQuery, strict=False)
    except msgspec.ValidationError:
        return False
    return True


def _policy_accepts(symbol: str) -> bool:
    try:
        document_from({"symbols": [symbol]})
    except PolicyError:
        return False
    return True


@FUZZ
@given(_symbol_like.filter(lambda s: "\n" not in s))
def test_body_query_and_policy_accept_exactly_the_documented_symbols(symbol: str) -> None:
    documented = _documented(SYMBOL_PATTERN, symbol)
    assert _body_accepts(symbol) is documented
    assert _query_accepts(symbol) is documented
    assert _policy_accepts(symbol) is documented


@FUZZ
@given(st.from_regex(SYMBOL_PATTERN, fullmatch=True).map(lambda s: s + "\n"))
@example("GOOG\n")
def test_a_symbol_with_a_final_newline_is_refused_everywhere(symbol: str) -> None:
    assert not (_body_accepts(symbol) or _query_accepts(symbol) or _policy_accepts(symbol))


# -- the policy loader ---------------------------------------------------------------------------
_dec = st.from_regex(r"[1-9][0-9]{0,3}(\.[0-9]{1,4})?", fullmatch=True)
_hhmm = st.from_regex(r"([01][0-9]|2[0-3]):[0-5][0-9]", fullmatch=True)
_symbol = st.from_regex(SYMBOL_PATTERN, fullmatch=True)
_valid_fields = {
    "scopes": st.lists(st.sampled_from(["read", "trade", "cancel"]), unique=True, max_size=3),
    "symbols": st.lists(_symbol, unique=True, max_size=5),
    "sides": st.lists(st.sampled_from(["buy", "sell"]), unique=True, min_size=1),
    "order_types": st.lists(st.sampled_from(["market", "limit"]), unique=True, min_size=1),
    "max_order_quantity": _dec,
    "max_order_notional": _dec,
    "max_open_orders": st.integers(min_value=0, max_value=1000),
    "max_position": _dec,
    "max_daily_notional": _dec,
    "max_daily_loss": _dec,
    "price_band_pct": st.sampled_from(["0.5", "1", "10", "100"]),
    "price_band_ticks": st.integers(min_value=1, max_value=1000),
    "orders_per_second": _dec,
    "cancels_per_second": _dec,
    "max_order_to_trade_ratio": st.sampled_from(["1", "2.5", "100"]),
    "trading_windows": st.lists(
        st.fixed_dictionaries({"start": _hhmm, "end": _hhmm}).filter(lambda w: w["start"] != w["end"]),
        min_size=1,
        max_size=3,
    ),
    "reduce_only": st.booleans(),
    "rate_limit": st.fixed_dictionaries(
        {"per_second": _dec, "burst": st.integers(min_value=1, max_value=1000)}
    ),
}
_valid_documents = st.fixed_dictionaries({}, optional=_valid_fields)


def test_the_generator_covers_every_policy_field() -> None:
    assert set(_valid_fields) == set(FIELDS)


@FUZZ
@given(_valid_documents)
def test_yaml_and_json_spellings_of_a_document_load_alike(document: dict[str, object]) -> None:
    from_json = parse_document(json.dumps(document))
    from_yaml = parse_document(yaml.safe_dump(document), filename="policy.yaml")
    assert to_mapping(from_json) == to_mapping(from_yaml) == to_mapping(document_from(document))
    effective(frozenset(Scope), from_json, from_yaml)  # usable at both levels


_DECIMAL_FIELDS = ("max_order_quantity", "max_position", "orders_per_second", "price_band_pct")


@FUZZ
@given(
    document=_valid_documents,
    name=st.sampled_from(_DECIMAL_FIELDS),
    value=st.from_regex(r"^[1-9][0-9]{0,2}$"),  # the loader's own kind of pattern, under re.search
)
@example(document={}, name="max_order_quantity", value="5\n")
def test_every_document_the_loader_accepts_can_be_enforced(
    document: dict[str, object], name: str, value: str
) -> None:
    try:
        doc = parse_document(json.dumps(document | {name: value}))
    except PolicyError:
        return
    effective(frozenset(Scope), doc, None)
    effective(frozenset(Scope), None, doc)


@pytest.mark.xfail(strict=True, reason="finding: deep nesting raises RecursionError, not PolicyError")
@FUZZ
@given(
    depth=st.integers(min_value=1, max_value=20_000), shape=st.sampled_from(["json", "yaml-list", "yaml-map"])
)
@example(depth=5_000, shape="json")
@example(depth=5_000, shape="yaml-list")
def test_any_nesting_depth_is_refused_with_a_policy_error(depth: int, shape: str) -> None:
    text = {
        "json": '{"symbols": ' + "[" * depth + "]" * depth + "}",
        "yaml-list": "symbols: " + "[" * depth + "]" * depth,
        "yaml-map": "symbols: " + "{a: " * depth + "1" + "}" * depth,
    }[shape]
    with contextlib.suppress(PolicyError):
        parse_document(text)


@pytest.mark.xfail(
    strict=True, reason="finding: a number over 4300 digits raises ValueError, not PolicyError"
)
@FUZZ
@given(digits=st.integers(min_value=1, max_value=60_000), spelling=st.sampled_from(["json", "yaml"]))
@example(digits=5_000, spelling="json")
def test_any_number_is_accepted_or_refused_with_a_policy_error(digits: int, spelling: str) -> None:
    number = "1" + "0" * (digits - 1)
    text = '{"max_open_orders": ' + number + "}" if spelling == "json" else "max_open_orders: " + number
    with contextlib.suppress(PolicyError):
        parse_document(text)
