"""Structured Field Values for HTTP, RFC 8941 — the parts RFC 9421 signatures use.

https://www.rfc-editor.org/rfc/rfc8941

Implements parsing of Dictionaries (§4.2.2) whose members are Items or Inner Lists with
Parameters, and serialisation of Inner Lists, Items and Parameters (§4.1).  The parser is
strict: anything outside the grammar raises :class:`SFVError`, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from decimal import Decimal

_MAX_LEN = 8192
_ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_FIRST = "abcdefghijklmnopqrstuvwxyz*"
_KEY_CHARS = _KEY_FIRST + "0123456789_-."
_SF_TOKEN_START_CHARS = _ALPHA + "*"  # RFC 8941 §3.3.4
_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN_CHARS = _TCHAR + ":/"
_B64 = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_STRING_RE = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(r"\\(.)")
_NUMBER_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


class SFVError(ValueError):
    """The field value is not a valid structured field."""


@dataclass(frozen=True, slots=True)
class Token:
    value: str


BareItem = int | Decimal | str | bytes | bool | Token
Params = dict[str, BareItem]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Params


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params


Member = Item | InnerList


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        if len(text) > _MAX_LEN:
            raise SFVError("field too long")
        if not text.isascii():
            raise SFVError("non-ASCII field")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def key(self) -> str:
        match = _KEY_RE.match(self.text, self.pos)
        if match is None:
            raise SFVError("bad key")
        self.pos = match.end()
        return match.group()

    def params(self) -> Params:
        out: Params = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip_sp()
            k = self.key()
            v: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                v = self.bare_item()
            out[k] = v
        return out

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == "-" or c.isdigit():
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c and c in _SF_TOKEN_START_CHARS:
            return self.token()
        raise SFVError("bad item")

    def number(self) -> int | Decimal:
        match = _NUMBER_RE.match(self.text, self.pos)
        if match is None:
            raise SFVError("bad number")
        integer, fraction = match.group(2), match.group(3)
        if fraction is None:
            if len(integer) > 15:
                raise SFVError("integer too long")
        elif len(integer) > 12 or len(fraction) > 3:
            raise SFVError("bad decimal")
        self.pos = match.end()
        if self.pos < len(self.text) and self.text[self.pos] in "0123456789.":
            raise SFVError("number too long")
        return int(match.group()) if fraction is None else Decimal(match.group())

    def string(self) -> str:
        match = _STRING_RE.match(self.text, self.pos)
        if match is None:
            raise SFVError("bad string")
        self.pos = match.end()
        body = match.group(1)
        return _UNESCAPE_RE.sub(r"\1", body) if "\\" in body else body

    def token(self) -> Token:
        match = _TOKEN_RE.match(self.text, self.pos)
        if match is None:
            raise SFVError("bad token")
        self.pos = match.end()
        return Token(match.group())

    def byte_sequence(self) -> bytes:
        self.pos += 1
        end = self.text.find(":", self.pos)
        if end < 0:
            raise SFVError("unterminated byte sequence")
        b64 = self.text[self.pos : end]
        if not set(b64) <= _B64:
            raise SFVError("bad base64")
        self.pos = end + 1
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise SFVError("bad base64") from None

    def boolean(self) -> bool:
        self.pos += 1
        c = self.peek()
        if c not in ("0", "1") or not c:
            raise SFVError("bad boolean")
        self.pos += 1
        return c == "1"

    def item(self) -> Item:
        return Item(self.bare_item(), self.params())

    def member(self) -> Member:
        if self.peek() == "(":
            return self.inner_list()
        return self.item()

    def inner_list(self) -> InnerList:
        self.pos += 1
        items: list[Item] = []
        while True:
            self.skip_sp()
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.params())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise SFVError("bad inner list")

    def dictionary(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        self.skip_sp()
        while self.pos < len(self.text):
            k = self.key()
            if self.peek() == "=":
                self.pos += 1
                out[k] = self.member()
            else:
                out[k] = Item(True, self.params())
            self.skip_ows()
            if self.pos >= len(self.text):
                return out
            if self.peek() != ",":
                raise SFVError("expected comma")
            self.pos += 1
            self.skip_ows()
            if self.pos >= len(self.text):
                raise SFVError("trailing comma")
        return out


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse an RFC 8941 Dictionary.  Duplicate keys keep the last value, as §4.2.2 says."""
    parser = _Parser(text)
    result = parser.dictionary()
    return result


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > 999_999_999_999_999:
            raise SFVError("integer out of range")
        return str(value)
    if isinstance(value, Decimal):
        text = format(value.quantize(Decimal("0.001")), "f").rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, Token):
        return value.value
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise SFVError("string not serialisable")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Params) -> str:
    out = []
    for k, v in params.items():
        out.append(f";{k}" if v is True else f";{k}={serialize_bare_item(v)}")
    return "".join(out)


def serialize_item(item: Item) -> str:
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + serialize_params(inner.params)
