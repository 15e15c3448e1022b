"""RFC 8941 structured fields: known values, strictness, and fuzzing."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto import sfv


def test_parses_a_signature_input_dictionary() -> None:
    parsed = sfv.parse_dictionary('sig1=("@method" "@path");created=1618884473;keyid="k1";alg="ed25519"')
    member = parsed["sig1"]
    assert isinstance(member, sfv.InnerList)
    assert [i.value for i in member.items] == ["@method", "@path"]
    assert member.params == {"created": 1618884473, "keyid": "k1", "alg": "ed25519"}


def test_parses_items_of_every_type() -> None:
    parsed = sfv.parse_dictionary('a=1, b=-2.5, c="x\\"y", d=tok/en, e=:aGk=:, f=?0, g')
    values = {k: v.value for k, v in parsed.items() if isinstance(v, sfv.Item)}
    assert values == {
        "a": 1,
        "b": Decimal("-2.5"),
        "c": 'x"y',
        "d": sfv.Token("tok/en"),
        "e": b"hi",
        "f": False,
        "g": True,
    }


@pytest.mark.parametrize(
    "text",
    [
        "a=",
        "a=(",
        'a="unterminated',
        "a=:not base64!:",
        "A=1",
        "a=1,",
        "a=1 b=2",
        "a=1234567890123456",
        "a=1.2345",
        'a="\\x"',
        "a=?2",
        "a=é",
    ],
)
def test_rejects_malformed_fields(text: str) -> None:
    with pytest.raises(sfv.SFVError):
        sfv.parse_dictionary(text)


def test_rejects_overlong_fields() -> None:
    with pytest.raises(sfv.SFVError):
        sfv.parse_dictionary("a=" + "1" * 9000)


@given(st.text(max_size=300))
def test_parser_raises_only_its_own_error(text: str) -> None:
    with contextlib.suppress(sfv.SFVError):
        sfv.parse_dictionary(text)


_keys = st.from_regex(r"[a-z][a-z0-9_\-.*]{0,8}", fullmatch=True)
_bare = st.one_of(
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.binary(max_size=20),
    st.booleans(),
)


@given(
    items=st.lists(st.text(alphabet="abc@-", min_size=1, max_size=8), max_size=5),
    params=st.dictionaries(_keys, _bare, max_size=4),
)
def test_inner_list_round_trip(items: list[str], params: dict[str, sfv.BareItem]) -> None:
    inner = sfv.InnerList(tuple(sfv.Item(i, {}) for i in items), params)
    text = sfv.serialize_inner_list(inner)
    parsed = sfv.parse_dictionary("x=" + text)["x"]
    assert parsed == inner
    assert isinstance(parsed, sfv.InnerList)
    assert sfv.serialize_inner_list(parsed) == text
