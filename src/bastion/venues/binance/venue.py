"""The Binance-spot venue adapter: the :class:`~bastion.ports.Venue`, ``MarketData`` and
``OrderFeed`` ports over the venue's REST API (``/api/v3``), with a Bastion account's venue
credential (sealed in the vault) opened for each signed call.

- **Market data from memory.**  The risk stage reads quotes synchronously, so a poller
  refreshes ``/api/v3/ticker/24hr`` for the configured symbols every ``poll_seconds`` and the
  instruments from ``/api/v3/exchangeInfo``.  A quote older than ``quote_max_age_seconds`` is
  no quote: orders are then refused (fail closed) until the venue answers again.  A last
  price that jumps more than ``max_quote_jump_bps`` from the one in force is held back until
  the next poll confirms it (one hostile or broken answer cannot move the reference price).
- **Orders.**  Each call is signed (``signing.py``) and goes through the bounded transport and
  the circuit breaker (``venues/http.py``); every answer is parsed and checked against what
  was asked (``wire.py``).  A 4xx is the venue's refusal (the order did not trade:
  :class:`VenueRejected` with a reason from a fixed set); anything else that is not a valid
  answer is a :class:`VenueError`, and the forward stage keeps the order ``pending`` (the
  venue may hold it; a retry with the same client order id asks again, and a "duplicate
  order" refusal is answered by looking the order up by that id).
- **Order reports.**  Listeners hear each order change this adapter sees in an answer (place,
  cancel, look-up, open orders).  Fills between look-ups are seen at the next one; the venue's
  user-data stream is not used yet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import structlog

from bastion.config import VenueSettings
from bastion.domain.credentials import CredentialPermissions
from bastion.domain.instruments import Instrument
from bastion.domain.money import format_decimal
from bastion.domain.orders import (
    Balance,
    OrderRequest,
    OrderStatus,
    OrderType,
    Ticker,
    TimeInForce,
    VenueOrder,
)
from bastion.errors import VenueError, VenueRejected
from bastion.ports import Clock, OrderListener
from bastion.venues.binance import wire
from bastion.venues.binance.signing import API_KEY_HEADER, encode_query, signed_query
from bastion.venues.binance_restrictions import RestrictionsFormatError, parse_api_restrictions
from bastion.venues.http import CircuitBreaker, HttpAnswer, HttpRequest, Transport, call_through

log = structlog.get_logger("bastion.venue")

_SEEN_LIMIT = 10_000
_BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class VenueKey:
    """A venue API key and its secret, opened from the vault for one call."""

    api_key: str
    secret: bytes = field(repr=False)


CredentialSource = Callable[[str], Awaitable[VenueKey | None]]


class _Refused(VenueRejected):
    """A 4xx with the venue's error code (kept for the adapter's own decisions)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def _reason(code: int, message: str) -> str:
    """The venue's error code as one of Bastion's stable reasons (its text is not passed on)."""
    text = message.lower()
    if code == -2010:
        if "insufficient balance" in text:
            return "INSUFFICIENT_BALANCE"
        if "duplicate" in text:
            return "DUPLICATE_ORDER"
        return "VENUE_REJECTED"
    return {
        -1013: "VENUE_FILTER",
        -1021: "VENUE_CLOCK_SKEW",
        -1022: "VENUE_CREDENTIAL_REFUSED",
        -1100: "INVALID_PARAMETER",
        -1102: "INVALID_PARAMETER",
        -1111: "INVALID_PARAMETER",
        -1121: "UNKNOWN_SYMBOL",
        -2011: "ORDER_NOT_OPEN",
        -2013: "UNKNOWN_ORDER",
        -2014: "VENUE_CREDENTIAL_REFUSED",
        -2015: "VENUE_CREDENTIAL_REFUSED",
    }.get(code, "VENUE_REJECTED")


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


class BinanceVenue:
    name = "binance"

    def __init__(
        self, settings: VenueSettings, transport: Transport, credentials: CredentialSource, clock: Clock
    ) -> None:
        if not settings.symbols:
            raise ValueError("a Binance venue needs at least one symbol")
        self._settings = settings
        self._transport = transport
        self._credentials = credentials
        self._clock = clock
        # One breaker for market data, one for trading: a working ticker must not keep the
        # circuit of a failing order endpoint closed (nor the other way round).
        self._market_breaker = CircuitBreaker(
            clock, failures=settings.breaker_failures, cooldown=settings.breaker_cooldown_seconds
        )
        self._trade_breaker = CircuitBreaker(
            clock, failures=settings.breaker_failures, cooldown=settings.breaker_cooldown_seconds
        )
        self._wanted = frozenset(settings.symbols)
        self._by_wire: dict[str, Instrument] = {}
        self._wire_of: dict[str, str] = {}
        self._quotes: dict[str, tuple[Ticker, Decimal]] = {}
        self._held: dict[str, Decimal] = {}
        self._listeners: list[OrderListener] = []
        self._seen: collections.OrderedDict[str, tuple[OrderStatus, Decimal]] = collections.OrderedDict()
        self._poller: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to load: a CLI process never needs market data (``serve`` does)."""

    async def serve(self) -> None:
        """Load instruments and quotes once (best effort), then keep them fresh."""
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_loop(), name="venue-poller")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self._transport.close()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # keep polling; meanwhile quotes age out and orders are refused
                log.exception("venue_poll_crashed", venue=self.name)

    async def poll_once(self) -> None:
        """One refresh of instruments (until they are known) and quotes; failures are logged
        and leave what is known to age out."""
        try:
            if len(self._by_wire) < len(self._wanted):
                await self._refresh_instruments()
            if self._by_wire:
                await self._refresh_quotes()
            self.last_error = None
        except VenueError as exc:
            self.last_error = str(exc)
            log.warning("venue_poll_failed", venue=self.name, reason=str(exc))

    async def _refresh_instruments(self) -> None:
        body = await self._public("/api/v3/exchangeInfo", [("symbols", _json_list(sorted(self._wanted)))])
        found = wire.instruments_from(wire.decode(body, wire.WireExchangeInfo), self._wanted)
        for wire_symbol, instrument in found.items():
            self._by_wire[wire_symbol] = instrument
            self._wire_of[instrument.symbol] = wire_symbol

    async def _refresh_quotes(self) -> None:
        body = await self._public("/api/v3/ticker/24hr", [("symbols", _json_list(sorted(self._by_wire)))])
        now = self._clock.now()
        for entry in wire.decode(body, list[wire.WireTicker])[: len(self._wanted)]:
            instrument = self._by_wire.get(entry.symbol)
            if instrument is None:
                continue
            try:
                ticker, volume = wire.ticker_from(entry, instrument, now)
            except wire.AnswerInvalid as exc:
                log.warning(
                    "venue_quote_refused", venue=self.name, symbol=instrument.symbol, reason=exc.reason
                )
                continue
            self._accept_quote(instrument.symbol, ticker, volume)

    def _accept_quote(self, symbol: str, ticker: Ticker, volume: Decimal) -> None:
        # Against the last accepted quote, however old: an outage must not let the first
        # answer after it move the reference price unconfirmed.
        accepted = self._quotes.get(symbol)
        bound = Decimal(self._settings.max_quote_jump_bps) / _BPS
        if accepted is not None and abs(ticker.last / accepted[0].last - 1) > bound:
            held = self._held.get(symbol)
            if held is None or abs(ticker.last / held - 1) > bound:
                self._held[symbol] = ticker.last  # wait for the next poll to confirm it
                log.warning("venue_quote_jump_held", venue=self.name, symbol=symbol)
                return
        self._held.pop(symbol, None)
        self._quotes[symbol] = (ticker, volume)

    # -- MarketData -----------------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument | None:
        wire_symbol = self._wire_of.get(symbol)
        return None if wire_symbol is None else self._by_wire[wire_symbol]

    def quote(self, symbol: str) -> Ticker | None:
        found = self._quotes.get(symbol)
        if found is None:
            return None
        age = (self._clock.now() - found[0].time).total_seconds()
        return found[0] if 0 <= age <= self._settings.quote_max_age_seconds else None

    def liquidity(self, symbol: str) -> Decimal | None:
        found = self._quotes.get(symbol)
        return found[1] if found is not None and found[1] > 0 else None

    # -- OrderFeed ------------------------------------------------------------------------
    def subscribe(self, listener: OrderListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: OrderListener) -> None:
        self._listeners.remove(listener)

    def _report(self, account: str, order: VenueOrder) -> None:
        state = (order.status, order.filled_quantity)
        if self._seen.get(order.venue_order_id) == state:
            return
        self._seen[order.venue_order_id] = state
        self._seen.move_to_end(order.venue_order_id)
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        for listener in self._listeners:
            listener(account, order)

    # -- the Venue port -------------------------------------------------------------------
    async def create_account(self, account: str) -> None:
        """Nothing at the venue: the account trades once a venue credential is added."""

    async def instruments(self) -> Sequence[Instrument]:
        return list(self._by_wire.values())

    async def ticker(self, symbol: str) -> Ticker | None:
        return self.quote(symbol)

    def _instrument_of(self, symbol: str) -> tuple[str, Instrument]:
        wire_symbol = self._wire_of.get(symbol)
        if wire_symbol is None:
            raise VenueRejected("UNKNOWN_SYMBOL")
        return wire_symbol, self._by_wire[wire_symbol]

    async def place(self, account: str, request: OrderRequest) -> VenueOrder:
        wire_symbol, instrument = self._instrument_of(request.symbol)
        params = [
            ("symbol", wire_symbol),
            ("side", wire.WIRE_SIDES[request.side]),
            ("type", wire.WIRE_TYPES[request.type]),
            ("quantity", format_decimal(request.quantity)),
        ]
        if request.type is OrderType.LIMIT:
            if request.price is None:
                raise VenueRejected("PRICE_REQUIRED")
            params += [("timeInForce", wire.WIRE_TIFS[request.time_in_force])]
            params += [("price", format_decimal(request.price))]
        elif request.time_in_force is not TimeInForce.IOC:
            raise VenueRejected("TIME_IN_FORCE_NOT_ALLOWED")  # a market order here is IOC
        params += [("newClientOrderId", request.client_order_id), ("newOrderRespType", "FULL")]
        try:
            body = await self._signed(account, "POST", "/api/v3/order", params)
        except _Refused as exc:
            if exc.reason != "DUPLICATE_ORDER":
                raise
            # an earlier attempt reached the venue: the order under this client id is the answer
            query = [("symbol", wire_symbol), ("origClientOrderId", request.client_order_id)]
            body = await self._signed(account, "GET", "/api/v3/order", query)
        order = wire.order_from(wire.decode(body, wire.WireOrder), instrument, self._clock.now())
        wire.check_placed(order, request)
        self._report(account, order)
        return order

    async def cancel(self, account: str, venue_order_id: str) -> VenueOrder:
        wire_symbol, number = wire.split_venue_order_id(venue_order_id)
        instrument = self._by_wire.get(wire_symbol)
        if instrument is None:
            raise VenueRejected("UNKNOWN_SYMBOL")
        body = await self._signed(
            account, "DELETE", "/api/v3/order", [("symbol", wire_symbol), ("orderId", number)]
        )
        order = wire.order_from(wire.decode(body, wire.WireOrder), instrument, self._clock.now())
        wire.check_same(order, venue_order_id)
        self._report(account, order)
        return order

    async def order(self, account: str, venue_order_id: str) -> VenueOrder | None:
        wire_symbol, number = wire.split_venue_order_id(venue_order_id)
        instrument = self._by_wire.get(wire_symbol)
        if instrument is None:
            return None
        try:
            body = await self._signed(
                account, "GET", "/api/v3/order", [("symbol", wire_symbol), ("orderId", number)]
            )
        except _Refused as exc:
            if exc.reason == "UNKNOWN_ORDER":
                return None
            raise
        order = wire.order_from(wire.decode(body, wire.WireOrder), instrument, self._clock.now())
        wire.check_same(order, venue_order_id)
        self._report(account, order)
        return order

    async def open_orders(self, account: str, symbol: str | None) -> Sequence[VenueOrder]:
        params: list[tuple[str, str]] = []
        if symbol is not None:
            params.append(("symbol", self._instrument_of(symbol)[0]))
        body = await self._signed(account, "GET", "/api/v3/openOrders", params)
        now = self._clock.now()
        found = []
        for entry in wire.decode(body, list[wire.WireOrder])[:1000]:
            instrument = self._by_wire.get(entry.symbol)
            if instrument is None:
                continue  # a symbol Bastion does not trade: not its business
            order = wire.order_from(entry, instrument, now)
            if not order.status.is_open or (symbol is not None and order.symbol != symbol):
                raise wire.AnswerInvalid("VENUE_ANSWER_MISMATCH")
            self._report(account, order)
            found.append(order)
        return found

    async def balances(self, account: str) -> Sequence[Balance]:
        body = await self._signed(account, "GET", "/api/v3/account", [("omitZeroBalances", "true")])
        return wire.balances_from(wire.decode(body, wire.WireAccount))

    async def audit_credentials(self, credentials: Mapping[str, object]) -> CredentialPermissions:
        """Ask the venue what this credential may do (``GET /sapi/v1/account/apiRestrictions``)."""
        api_key, secret = credentials.get("api_key"), credentials.get("api_secret")
        if not isinstance(api_key, str) or not isinstance(secret, str):
            raise VenueRejected("CREDENTIAL_REPORT", "api_key and api_secret are required")
        key = VenueKey(api_key, secret.encode())
        body = await self._send_signed(key, "GET", "/sapi/v1/account/apiRestrictions", [])
        try:
            return parse_api_restrictions(body)
        except RestrictionsFormatError:
            raise wire.AnswerInvalid("VENUE_ANSWER_MALFORMED") from None

    # -- HTTP -----------------------------------------------------------------------------
    async def _public(self, path: str, params: Sequence[tuple[str, str]]) -> bytes:
        request = HttpRequest("GET", path, encode_query(params))
        return self._body(await call_through(self._market_breaker, self._transport, request))

    async def _signed(self, account: str, method: str, path: str, params: Sequence[tuple[str, str]]) -> bytes:
        key = await self._credentials(account)
        if key is None:
            raise VenueRejected("NO_VENUE_CREDENTIAL")
        return await self._send_signed(key, method, path, params)

    async def _send_signed(
        self, key: VenueKey, method: str, path: str, params: Sequence[tuple[str, str]]
    ) -> bytes:
        stamp = int(self._clock.now().timestamp() * 1000)
        query = signed_query(
            key.secret, params, timestamp_ms=stamp, recv_window_ms=self._settings.recv_window_ms
        )
        request = HttpRequest(method, path, query, {API_KEY_HEADER: key.api_key})
        return self._body(await call_through(self._trade_breaker, self._transport, request))

    def _body(self, answer: HttpAnswer) -> bytes:
        """The body of a 200 JSON answer; a refusal or a failure otherwise."""
        status = answer.status
        if status == 200:
            if answer.content_type.split(";")[0].strip().lower() != "application/json":
                raise wire.AnswerInvalid("VENUE_ANSWER_NOT_JSON")
            return answer.body
        if 300 <= status < 400:
            raise wire.AnswerInvalid("VENUE_REDIRECTED")
        if status in (418, 429):
            raise VenueError("VENUE_RATE_LIMITED")
        if 400 <= status < 500:
            error = wire.decode(answer.body, wire.WireError)
            raise _Refused(_reason(error.code, error.msg), error.code)
        raise VenueError("VENUE_SERVER_ERROR" if status >= 500 else "VENUE_ANSWER_STATUS")
