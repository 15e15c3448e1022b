"""A local venue that speaks the Binance-spot REST protocol (the subset Bastion uses), over
TLS on 127.0.0.1, and that can be told to misbehave.

It checks every signed request the way the venue does (``X-MBX-APIKEY``, the HMAC-SHA256
``signature`` over the query string before it), keeps orders and balances, fills market
orders at the touch and resting limit orders when told to, and dedups ``newClientOrderId``
("Duplicate order sent.").  ``hostile[operation]`` makes one operation ("place", "order",
"cancel", "ticker", "account", ...) answer in one of the ways of :data:`HOSTILE`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import itertools
import json
import ssl
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

# A hostile answer: what it does (every one is something a real broken or malicious peer does).
HOSTILE = (
    "malformed",  # truncated JSON
    "not_json",  # an HTML error page with 200
    "oversized",  # 4 MiB of JSON
    "gzip_bomb",  # a small gzip body that inflates to 64 MiB, never asked for
    "slow",  # answers after 30 s
    "redirect",  # 302 to the cloud metadata address
    "server_error",  # 503, with the request's API key echoed in the text
    "mismatch",  # an answer about another order (other client id and symbol)
    "overfill",  # executed more than the order's quantity
    "worse_fill",  # a limit buy filled above its limit
    "huge_number",  # a quantity of 400 digits, and an exponent
    "deep_nesting",  # 30 000 nested arrays
    "echo_secret",  # a 400 whose message carries the API secret and markup
    "rate_limited",  # 429 with Retry-After
    "crossed",  # a ticker with bid above ask
    "jump",  # a ticker whose last price is 10x the real one
)


@dataclass
class FakeOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)
    fills: list[dict[str, Any]] = field(default_factory=list)
    time_ms: int = 1_767_225_600_000


def _plain(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.00000001")), "f")


class FakeBinance:
    def __init__(self, cert: Path, key: Path, api_key: str, secret: str) -> None:
        self.cert, self.key = cert, key
        self.api_key, self.secret = api_key, secret
        self.bid, self.ask, self.last = Decimal("50000.00"), Decimal("50000.10"), Decimal("50000.05")
        self.balances = {"BTC": Decimal("10"), "USDT": Decimal("1000000")}
        self.orders: dict[int, FakeOrder] = {}
        self.ids = itertools.count(1001)
        self.hostile: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.bad_signatures = 0
        self.restrictions: dict[str, Any] = {
            "ipRestrict": True,
            "enableReading": True,
            "enableSpotAndMarginTrading": True,
            "enableWithdrawals": False,
            "enableInternalTransfer": False,
            "permitsUniversalTransfer": False,
        }
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    # -- running in a thread of its own -------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True, name="fake-binance").start()
        if not ready.wait(10):
            raise RuntimeError("the fake venue did not start")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._runner is None:
            return
        runner = self._runner

        async def shut() -> None:
            await runner.cleanup()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()  # a "slow" answer still sleeping

        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    def count(self, operation: str) -> int:
        with self._lock:
            return self.hits.get(operation, 0)

    # -- the protocol -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = {
            ("GET", "/api/v3/exchangeInfo"): ("exchange_info", False),
            ("GET", "/api/v3/ticker/24hr"): ("ticker", False),
            ("POST", "/api/v3/order"): ("place", True),
            ("GET", "/api/v3/order"): ("order", True),
            ("DELETE", "/api/v3/order"): ("cancel", True),
            ("GET", "/api/v3/openOrders"): ("open_orders", True),
            ("GET", "/api/v3/account"): ("account", True),
            ("GET", "/sapi/v1/account/apiRestrictions"): ("restrictions", True),
        }.get((request.method, request.path))
        if route is None:
            return web.json_response({"code": -1000, "msg": "no such endpoint"}, status=404)
        operation, signed = route
        with self._lock:
            self.hits[operation] = self.hits.get(operation, 0) + 1
        query = request.query_string
        if signed:
            refused = self._check_signature(request, query)
            if refused is not None:
                return refused
        params = dict(parse_qsl(query, keep_blank_values=True))
        mode = self.hostile.get(operation)
        if mode is not None:
            answer = await self._hostile(mode, operation, params, request)
            if answer is not None:
                return answer
        handler = getattr(self, f"_{operation}")
        result = handler(params)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)

    def _check_signature(self, request: web.Request, query: str) -> web.Response | None:
        body, sep, signature = query.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        if (
            not sep
            or request.headers.get("X-MBX-APIKEY") != self.api_key
            or not hmac.compare_digest(signature, expected)
            or "timestamp=" not in body
        ):
            self.bad_signatures += 1
            return web.json_response(
                {"code": -1022, "msg": "Signature for this request is not valid."}, status=400
            )
        return None

    def _exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "symbols": [
                {
                    "symbol": "BTCUSDT",
                    "status": "TRADING",
                    "baseAsset": "BTC",
                    "quoteAsset": "USDT",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01",
                            "maxPrice": "1000000.00",
                            "tickSize": "0.01",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00001",
                            "maxQty": "9000.0",
                            "stepSize": "0.00001",
                        },
                        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True},
                    ],
                }
            ],
        }

    def _ticker_body(self, last: Decimal | None = None, bid: Decimal | None = None) -> list[dict[str, Any]]:
        return [
            {
                "symbol": "BTCUSDT",
                "bidPrice": _plain(bid if bid is not None else self.bid),
                "askPrice": _plain(self.ask),
                "lastPrice": _plain(last if last is not None else self.last),
                "quoteVolume": "1500000000.00",
                "closeTime": 1_767_225_600_000,
            }
        ]

    def _ticker(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return self._ticker_body()

    def _wire(self, order: FakeOrder, *, cancel_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": cancel_id or order.client_order_id,
            "transactTime": order.time_ms,
            "price": _plain(order.price),
            "origQty": _plain(order.quantity),
            "executedQty": _plain(order.executed),
            "cummulativeQuoteQty": _plain(order.quote),
            "status": order.status,
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
            "fills": order.fills,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if cancel_id is not None:
            body["origClientOrderId"] = order.client_order_id
        return body

    def _error(self, code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _new_order(self, params: dict[str, str]) -> FakeOrder | web.Response:
        if params.get("symbol") != "BTCUSDT":
            return self._error(-1121, "Invalid symbol.")
        cid = params.get("newClientOrderId", "")
        for existing in self.orders.values():
            if existing.client_order_id == cid:
                return self._error(-2010, "Duplicate order sent.")
        kind = params["type"]
        order = FakeOrder(
            order_id=next(self.ids),
            client_order_id=cid,
            symbol="BTCUSDT",
            side=params["side"],
            type=kind,
            time_in_force=params.get("timeInForce", "GTC"),
            quantity=Decimal(params["quantity"]),
            price=Decimal(params.get("price", "0")),
        )
        touch = self.ask if order.side == "BUY" else self.bid
        crosses = kind == "MARKET" or (
            order.price >= self.ask if order.side == "BUY" else order.price <= self.bid
        )
        if crosses:
            price = (
                touch
                if kind == "MARKET"
                else (min(order.price, touch) if order.side == "BUY" else max(order.price, touch))
            )
            self._fill(order, order.quantity, price)
        elif kind == "LIMIT" and order.time_in_force != "GTC":
            order.status = "EXPIRED"
        self.orders[order.order_id] = order
        return order

    def _fill(self, order: FakeOrder, quantity: Decimal, price: Decimal) -> None:
        order.executed += quantity
        order.quote += quantity * price
        order.fills.append(
            {
                "price": _plain(price),
                "qty": _plain(quantity),
                "commission": "0",
                "commissionAsset": "BNB",
                "tradeId": 7,
            }
        )
        order.status = "FILLED" if order.executed == order.quantity else "PARTIALLY_FILLED"

    def _place(self, params: dict[str, str]) -> dict[str, Any] | web.Response:
        order = self._new_order(params)
        return order if isinstance(order, web.Response) else self._wire(order)

    def _find(self, params: dict[str, str]) -> FakeOrder | None:
        if "orderId" in params:
            found = self.orders.get(int(params["orderId"]))
        else:
            found = next(
                (o for o in self.orders.values() if o.client_order_id == params.get("origClientOrderId")),
                None,
            )
        return found if found is not None and found.symbol == params.get("symbol") else None

    def _order(self, params: dict[str, str]) -> dict[str, Any] | web.Response:
        found = self._find(params)
        if found is None:
            return self._error(-2013, "Order does not exist.")
        body = self._wire(found)
        body.pop("fills")
        return body

    def _cancel(self, params: dict[str, str]) -> dict[str, Any] | web.Response:
        found = self._find(params)
        if found is None or found.status not in ("NEW", "PARTIALLY_FILLED"):
            return self._error(-2011, "Unknown order sent.")
        found.status = "CANCELED"
        body = self._wire(found, cancel_id="cancel-" + found.client_order_id[:20])
        body.pop("fills")
        return body

    def _open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        found = [o for o in self.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")]
        return [self._wire(o) for o in found]

    def _account(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "canTrade": True,
            "balances": [
                {"asset": a, "free": _plain(v), "locked": "0.00000000"} for a, v in self.balances.items()
            ],
        }

    def _restrictions(self, params: dict[str, str]) -> dict[str, Any]:
        return self.restrictions

    def fill_resting(self, order_id: int, price: Decimal | None = None) -> None:
        order = self.orders[order_id]
        self._fill(order, order.quantity - order.executed, price or order.price)

    # -- misbehaving ------------------------------------------------------------------------
    async def _hostile(
        self, mode: str, operation: str, params: dict[str, str], request: web.Request
    ) -> web.StreamResponse | None:
        if mode in ("mismatch", "overfill", "worse_fill", "huge_number") and operation == "place":
            order = self._new_order(params)  # the venue really takes the order ...
            if isinstance(order, web.Response):
                return order
            body = self._wire(order)  # ... and then lies about it
            if mode == "mismatch":
                body["clientOrderId"], body["symbol"] = "someone-elses-order", "ETHUSDT"
            elif mode == "overfill":
                body["executedQty"], body["status"] = _plain(order.quantity * 1000), "FILLED"
            elif mode == "worse_fill":
                body["fills"] = [{"price": _plain(order.price * 2), "qty": _plain(order.quantity)}]
                body["executedQty"], body["cummulativeQuoteQty"] = (
                    _plain(order.quantity),
                    _plain(order.quantity * order.price * 2),
                )
                body["status"] = "FILLED"
            else:
                body["origQty"], body["price"] = "9" * 400, "1e999"
            return web.json_response(body)
        if operation == "place" and mode in (
            "malformed",
            "slow",
            "not_json",
            "oversized",
            "gzip_bomb",
            "server_error",
        ):
            self._new_order(params)  # taken by the venue; the answer is what goes wrong
        if mode == "malformed":
            return web.Response(body=b'{"symbol": "BTCUSDT", "orderId": 12', content_type="application/json")
        if mode == "not_json":
            return web.Response(body=b"<html><body>Maintenance</body></html>", content_type="text/html")
        if mode == "oversized":
            return web.Response(
                body=b'{"pad": "' + b"A" * (4 * 1024 * 1024) + b'"}', content_type="application/json"
            )
        if mode == "gzip_bomb":
            bomb = gzip.compress(b"[" * (64 * 1024 * 1024), compresslevel=9)
            return web.Response(
                body=bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        if mode == "slow":
            await asyncio.sleep(30)
            return web.json_response({})
        if mode == "redirect":
            return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        if mode == "server_error":
            key = request.headers.get("X-MBX-APIKEY", "")
            return web.Response(status=503, text=f"upstream failed for key {key}")
        if mode == "deep_nesting":
            return web.Response(body=b"[" * 30_000 + b"]" * 30_000, content_type="application/json")
        if mode == "echo_secret":
            msg = f"<script>alert(1)</script> bad key {self.api_key} secret {self.secret}"
            return web.json_response({"code": -2010, "msg": msg}, status=400)
        if mode == "rate_limited":
            return web.json_response(
                {"code": -1003, "msg": "Too many requests"}, status=429, headers={"Retry-After": "1"}
            )
        if mode == "crossed" and operation == "ticker":
            return web.json_response(self._ticker_body(bid=self.ask * 2))
        if mode == "jump" and operation == "ticker":
            return web.json_response(self._ticker_body(last=self.last * 10))
        return None


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()
