"""Firewall stage: the positive security model, and protocol anomalies.

Only declared routes reach the pipeline (the HTTP edge answers 404/405 for the rest).  Here
every body must be JSON of the route's strict struct (unknown fields refused), every path
parameter and query must match its pattern, and bodies have a size cap and a content type.
Free-text fields (an order's ``label``) pass injection detection (``injection.py``).

Before any of that, requests that parse in more than one way are refused (``400``):
a header that must be single given twice (``Host``, ``Content-Length``, ``Content-Type``,
``Transfer-Encoding``, ``X-Forwarded-For``/``-Proto``), ``Content-Length`` together with
``Transfer-Encoding`` (the request-smuggling pattern), a transfer coding other than
``chunked``, a path that is not canonical (``//``, dot segments, percent-encoding,
backslashes; answered ``404`` like any path that names nothing) and malformed
percent-encoding in the query.  Signature headers given twice
are authentication failures and left to the authentication stage (one ``401`` for all).
"""

from __future__ import annotations

import functools
import json
import re
import typing
from typing import ClassVar
from urllib.parse import parse_qsl

import msgspec

from bastion.domain.money import DecimalFormatError, parse_decimal
from bastion.domain.orders import OrderRequest, OrderType, TimeInForce
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.injection import inspect_text
from bastion.pipeline.context import RequestContext
from bastion.schema import PlaceOrder

_MAX_QUERY_FIELDS = 16
_SINGLE_HEADERS: tuple[str, ...] = ("host", "content-length", "content-type", "transfer-encoding")
_SINGLE_HEADERS += ("x-forwarded-for", "x-forwarded-proto")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def canonical(path: str) -> bool:
    """No empty or dot segments, no percent-encoding, no backslashes."""
    if "//" in path or "%" in path or "\\" in path:
        return False
    return "/./" not in path and "/../" not in path and not path.endswith(("/.", "/.."))


def protocol_anomaly(ctx: RequestContext) -> str | None:
    """Why the request is ambiguous at the HTTP level, or None."""
    headers = ctx.headers
    for name in _SINGLE_HEADERS:
        if len(headers.get(name, ())) > 1:
            return f"duplicate {name} header"
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if "content-length" in headers:
            return "both Content-Length and Transfer-Encoding"
        if encoding[0].strip().lower() != "chunked":
            return "transfer coding other than chunked"
    if _BAD_PERCENT.search(ctx.query):
        return "malformed percent-encoding in the query"
    return None


def _deny(code: ErrorCode, reason: str) -> Deny:
    return Deny("firewall", code, reason)


def _is_json(content_types: list[str]) -> bool:
    if len(content_types) != 1:
        return False
    media, _, params = content_types[0].partition(";")
    if media.strip().lower() != "application/json":
        return False
    params = params.strip().lower().replace(" ", "")
    return params in ("", "charset=utf-8")


def to_order_request(body: PlaceOrder) -> OrderRequest | str:
    """The domain order for a decoded body, or the reason it is malformed."""
    if body.type is OrderType.LIMIT and body.price is None:
        return "limit order without price"
    if body.type is OrderType.MARKET and body.price is not None:
        return "market order with price"
    tif = body.time_in_force
    if tif is None:
        tif = TimeInForce.IOC if body.type is OrderType.MARKET else TimeInForce.GTC
    if body.type is OrderType.MARKET and tif is TimeInForce.GTC:
        return "market order with time_in_force gtc"
    try:
        quantity = parse_decimal(body.quantity)
        price = None if body.price is None else parse_decimal(body.price)
    except DecimalFormatError as exc:  # the struct's pattern should have refused it already
        return f"decimal refused: {exc}"
    return OrderRequest(
        client_order_id=body.client_order_id,
        symbol=body.symbol,
        side=body.side,
        type=body.type,
        quantity=quantity,
        price=price,
        time_in_force=tif,
        label=body.label,
    )


_DIGITS = re.compile(r"-?(0|[1-9][0-9]*)")  # sign and size are for the range check to refuse


@functools.cache
def _integer_fields(struct: type) -> tuple[str, ...]:
    """A query struct's integer fields (msgspec's lax conversion would take "1e3" for 1000)."""
    hints = typing.get_type_hints(struct, include_extras=True)
    found = []
    for name in msgspec.structs.fields(struct):
        hint = hints[name.name]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if base is int:
            found.append(name.name)
    return tuple(found)


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Duplicate
    return found


def _has_duplicate_member(body: bytes) -> bool:
    """Whether an object in the body names a member twice (``"price"`` and ``"pr\\u0069ce"``
    included).  A decoder keeps the last; a log reader or a proxy may keep the first, and then
    it sees another order than the one placed."""
    try:
        json.loads(body, object_pairs_hook=_pairs)
    except _Duplicate:
        return True
    except ValueError:
        return True  # msgspec decoded it, the standard library cannot: refuse what is ambiguous
    return False


class Firewall:
    name: ClassVar[str] = "firewall"

    def __init__(self) -> None:
        self._patterns: dict[str, re.Pattern[str]] = {}

    def _pattern(self, text: str) -> re.Pattern[str]:
        compiled = self._patterns.get(text)
        if compiled is None:
            compiled = self._patterns[text] = re.compile(text)
        return compiled

    async def __call__(self, ctx: RequestContext) -> Verdict:
        route = ctx.route
        anomaly = protocol_anomaly(ctx)
        if anomaly is not None:
            return _deny(ErrorCode.BAD_REQUEST, anomaly)
        if not canonical(ctx.path):  # names no resource: answered like a missing one
            return _deny(ErrorCode.NOT_FOUND, "non-canonical path")
        if ctx.body_too_large:
            return _deny(ErrorCode.PAYLOAD_TOO_LARGE, "body over the size cap")
        for name, pattern in route.path_params.items():
            if self._pattern(pattern).fullmatch(ctx.path_params.get(name, "")) is None:
                return _deny(ErrorCode.NOT_FOUND, f"path parameter {name} malformed")
        if route.query is None:
            if ctx.query:
                return _deny(ErrorCode.BAD_REQUEST, "query string on a route that takes none")
        else:
            try:
                pairs = parse_qsl(
                    ctx.query,
                    keep_blank_values=True,
                    strict_parsing=bool(ctx.query),
                    max_num_fields=_MAX_QUERY_FIELDS,
                )
            except ValueError:
                return _deny(ErrorCode.BAD_REQUEST, "malformed query string")
            fields = dict(pairs)
            if len(fields) != len(pairs):
                return _deny(ErrorCode.BAD_REQUEST, "query parameter repeated")
            for name in _integer_fields(route.query):
                value = fields.get(name)
                if value is not None and _DIGITS.fullmatch(value) is None:  # not 1.0, 1e3, +1, 0x1
                    return _deny(ErrorCode.BAD_REQUEST, f"query: {name} is not written as digits")
            try:
                ctx.query_params = msgspec.convert(fields, type=route.query, strict=False)
            except msgspec.ValidationError as exc:
                return _deny(ErrorCode.BAD_REQUEST, f"query: {exc}")
        if route.body is None:
            if ctx.body:
                return _deny(ErrorCode.BAD_REQUEST, "body on a route that takes none")
            return ALLOW
        if not _is_json(ctx.headers.get("content-type", [])):
            return _deny(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "content type is not application/json")
        try:
            body = msgspec.json.decode(ctx.body, type=route.body)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            return _deny(ErrorCode.BAD_REQUEST, f"body: {type(exc).__name__}: {str(exc)[:200]}")
        if _has_duplicate_member(ctx.body):  # decoded, so small and shaped like the struct
            return _deny(ErrorCode.BAD_REQUEST, "a member is given twice")
        ctx.payload = body
        if isinstance(body, PlaceOrder):
            if body.label is not None:
                why = inspect_text(body.label)
                if why is not None:
                    return _deny(ErrorCode.BAD_REQUEST, f"label refused: {why}")
            order = to_order_request(body)
            if isinstance(order, str):
                return _deny(ErrorCode.BAD_REQUEST, order)
            ctx.payload = order
        return ALLOW
