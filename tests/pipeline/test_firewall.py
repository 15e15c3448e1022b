from __future__ import annotations

import pytest

from bastion.clock import FakeClock
from bastion.domain.orders import OrderRequest, TimeInForce
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ErrorCode
from bastion.pipeline.firewall import Firewall
from bastion.schema import ListOrdersQuery
from tests.support import Req, context, dec, order_body

clock = FakeClock()
ORDER_ID = "ord_" + "a" * 24


async def run(req: Req, **ctx_changes: object) -> tuple[object, object]:
    ctx = context(req, clock)
    for name, value in ctx_changes.items():
        setattr(ctx, name, value)
    verdict = await Firewall()(ctx)
    return verdict, ctx


async def test_a_valid_order_becomes_a_domain_order() -> None:
    verdict, ctx = await run(Req("place_order", order_body(quantity="1.50", price="100.25")))
    assert isinstance(verdict, Allow)
    order = ctx.payload  # type: ignore[attr-defined]
    assert isinstance(order, OrderRequest)
    assert (order.quantity, order.price, order.time_in_force) == (dec("1.50"), dec("100.25"), TimeInForce.GTC)


async def test_market_orders_default_to_ioc() -> None:
    verdict, ctx = await run(Req("place_order", order_body(type="market", price=None)))
    assert isinstance(verdict, Allow)
    assert ctx.payload.time_in_force is TimeInForce.IOC  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        order_body(status="filled"),  # a field a client may not set
        order_body(account="bob"),
        order_body(quantity="1e3"),
        order_body(quantity=1.5),  # JSON numbers are refused: decimals travel as strings
        order_body(quantity="-1"),
        order_body(price="NaN"),
        order_body(side="short"),
        order_body(client_order_id="bad id with spaces"),
        order_body(client_order_id="x" * 37),
        order_body(symbol="btc-usd"),
        order_body(symbol="BTC/USD"),
        order_body(price=None),  # a limit order needs a price
        order_body(type="market"),  # a market order must not have one
        order_body(type="market", price=None, time_in_force="gtc"),
        b"{not json",
        b"[]",
        b'{"client_order_id": "c1", "client_order_id": "c2"}',
    ],
)
async def test_malformed_bodies_are_400(body: object) -> None:
    verdict, _ = await run(Req("place_order", body))
    assert isinstance(verdict, Deny)
    assert (verdict.stage, verdict.code) == ("firewall", ErrorCode.BAD_REQUEST)


async def test_body_over_the_cap_is_413() -> None:
    verdict, _ = await run(Req("place_order", order_body()), body_too_large=True)
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"]
)
async def test_wrong_content_type_is_415(content_type: str) -> None:
    verdict, _ = await run(Req("place_order", order_body(), headers={"content-type": [content_type]}))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


async def test_json_with_charset_is_accepted() -> None:
    verdict, _ = await run(
        Req("place_order", order_body(), headers={"content-type": ["application/json; charset=UTF-8"]})
    )
    assert isinstance(verdict, Allow)


@pytest.mark.parametrize("order_id", ["1", "ord_short", "ORD_" + "a" * 24, "ord_" + "a" * 23 + "!", "../etc"])
async def test_malformed_ids_look_like_missing_ones(order_id: str) -> None:
    verdict, _ = await run(Req("get_order", path_params={"id": order_id}))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.NOT_FOUND


async def test_well_formed_id_passes() -> None:
    verdict, _ = await run(Req("get_order", path_params={"id": ORDER_ID}))
    assert isinstance(verdict, Allow)


@pytest.mark.parametrize(
    "query",
    [
        "status=maybe",
        "limit=0",
        "limit=501",
        "limit=abc",
        "colour=red",
        "status=open&status=all",
        "symbol=x y",
    ],
)
async def test_bad_queries_are_400(query: str) -> None:
    verdict, _ = await run(Req("list_orders", query=query))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.BAD_REQUEST


async def test_good_query_is_decoded() -> None:
    verdict, ctx = await run(Req("list_orders", query="status=open&symbol=BTC-USD&limit=5"))
    assert isinstance(verdict, Allow)
    assert ctx.query_params == ListOrdersQuery(status="open", symbol="BTC-USD", limit=5)  # type: ignore[attr-defined]


async def test_routes_without_body_or_query_refuse_them() -> None:
    verdict, _ = await run(Req("get_account", b'{"x":1}'))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.BAD_REQUEST
    verdict, _ = await run(Req("get_account", query="x=1"))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.BAD_REQUEST


async def test_a_clean_label_rides_with_the_order_and_an_attack_is_refused() -> None:
    verdict, ctx = await run(Req("place_order", order_body(label="O'Brien's grid #3 @ 0.5%")))
    assert isinstance(verdict, Allow) and ctx.payload.label == "O'Brien's grid #3 @ 0.5%"  # type: ignore[attr-defined]
    assert ctx.payload.fingerprint() == (await run(Req("place_order", order_body())))[1].payload.fingerprint()  # type: ignore[attr-defined]
    for attack, why in (
        ("x' UNION SELECT 1 --", "SQL"),
        ("admin'--", "SQL"),
        ("../../etc/passwd", "traversal"),
    ):
        verdict, _ = await run(Req("place_order", order_body(label=attack)))
        assert isinstance(verdict, Deny) and verdict.code is ErrorCode.BAD_REQUEST and why in verdict.reason


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"host": ["a", "b"]}, "duplicate host"),
        ({"content-length": ["10", "10"]}, "duplicate content-length"),
        ({"content-type": ["application/json", "application/json"]}, "duplicate content-type"),
        ({"transfer-encoding": ["chunked"], "content-length": ["5"]}, "both Content-Length"),
        ({"transfer-encoding": ["gzip, chunked"]}, "transfer coding"),
        ({"x-forwarded-for": ["1.2.3.4", "5.6.7.8"]}, "duplicate x-forwarded-for"),
    ],
)
async def test_ambiguous_requests_are_refused(headers: dict[str, list[str]], why: str) -> None:
    ctx = context(Req("get_account"), clock)
    ctx.headers.update(headers)
    verdict = await Firewall()(ctx)
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.BAD_REQUEST and why in verdict.reason


@pytest.mark.parametrize(
    "path", ["//v1/account", "/v1/./account", "/v1/x/../account", "/v1/%61ccount", "/v1\\account"]
)
async def test_non_canonical_paths_name_nothing(path: str) -> None:
    verdict, _ = await run(Req("get_account"), path=path)
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.NOT_FOUND


async def test_malformed_percent_encoding_in_a_query_is_refused() -> None:
    verdict, _ = await run(Req("list_orders", query="symbol=%zz"))
    assert isinstance(verdict, Deny) and "percent" in verdict.reason
