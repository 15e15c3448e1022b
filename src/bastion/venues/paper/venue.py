"""The paper venue behind the ``Venue`` port: the engine, its prices and its persistence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bastion.clock import from_us, to_us
from bastion.domain.credentials import CredentialPermissions
from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import Balance, Fill, OrderRequest, Ticker, VenueOrder
from bastion.errors import VenueRejected
from bastion.ports import Clock, OrderListener
from bastion.venues.binance_restrictions import RestrictionsFormatError, parse_api_restrictions
from bastion.venues.paper.data import Bar, load_series
from bastion.venues.paper.engine import Changes, Market, PaperEngine, PaperOrder
from bastion.venues.paper.store import PaperStore


@dataclass(frozen=True, slots=True)
class MarketSpec:
    symbol: str
    base: str
    quote: str
    asset_class: AssetClass
    series: str
    tick_size: str
    lot_size: str
    min_notional: str
    depth: str
    half_spread: str
    daily_volume: str = "0"  # a typical 24-hour volume in the quote currency (what a ticker reports)
    scale: str = "1"  # every price of the series times this


# One crypto pair, one forex pair, one stock, each on its real historical series; and one thin
# coin (MEME-USD: the BTCUSD series scaled by 10^-6, about $50,000 traded a day), the kind of
# market the 2022 3Commas thieves pumped with stolen keys.
DEFAULT_MARKETS = (
    MarketSpec(
        "BTC-USD", "BTC", "USD", AssetClass.CRYPTO, "BTCUSD", "0.01", "0.0001", "1", "2", "0.0005", "2e10"
    ),
    MarketSpec(
        "EUR-USD", "EUR", "USD", AssetClass.FOREX, "EURUSD", "0.00001", "1", "10", "250000", "0.00005", "1e11"
    ),
    MarketSpec("GOOG", "GOOG", "USD", AssetClass.STOCK, "GOOG", "0.01", "1", "1", "200", "0.0005", "2e9"),
    MarketSpec(
        "MEME-USD",
        "MEME",
        "USD",
        AssetClass.CRYPTO,
        "BTCUSD",
        "0.0000001",
        "1",
        "1",
        "2000000",
        "0.002",
        "5e4",
        "0.000001",
    ),
)
DEFAULT_FUNDING = {
    "USD": Decimal(1_000_000),
    "BTC": Decimal(10),
    "EUR": Decimal(100_000),
    "GOOG": Decimal(500),
}
# Bar 0 of every series plays at this moment; the replay wraps around at the series' end.
DEFAULT_EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def build_markets(
    specs: Sequence[MarketSpec] = DEFAULT_MARKETS, loader: Callable[[str], list[Bar]] = load_series
) -> dict[str, Market]:
    markets = {}
    for spec in specs:
        instrument = Instrument(
            symbol=spec.symbol,
            base=spec.base,
            quote=spec.quote,
            asset_class=spec.asset_class,
            tick_size=Decimal(spec.tick_size),
            lot_size=Decimal(spec.lot_size),
            min_notional=Decimal(spec.min_notional),
        )
        bars = loader(spec.series)
        scale = Decimal(spec.scale)
        if scale != 1:
            bars = [Bar(b.open * scale, b.high * scale, b.low * scale, b.close * scale) for b in bars]
        markets[spec.symbol] = Market(
            instrument, bars, Decimal(spec.depth), Decimal(spec.half_spread), Decimal(spec.daily_volume)
        )
    return markets


def to_venue_order(order: PaperOrder) -> VenueOrder:
    average = None
    if order.filled:
        average = (order.quote_filled / order.filled).quantize(Decimal("1e-12")).normalize()
    return VenueOrder(
        venue_order_id=order.venue_order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        time_in_force=order.time_in_force,
        quantity=order.quantity,
        price=order.price,
        status=order.status,
        filled_quantity=order.filled,
        average_price=average,
        created_at=from_us(order.created_us),
        updated_at=from_us(order.updated_us),
        fills=tuple(Fill(f.price, f.quantity, from_us(f.time_us)) for f in order.fills),
    )


class PaperVenue:
    """Each call first lets the market move to ``clock.now()``, then acts, then persists
    what changed, all under one lock so persisted state follows the engine's order."""

    name = "paper"

    def __init__(self, engine: PaperEngine, store: PaperStore, clock: Clock) -> None:
        self._engine = engine
        self._store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self._started = False
        self._listeners: list[OrderListener] = []

    def subscribe(self, listener: OrderListener) -> None:
        """Report every order change to ``listener`` (after it is persisted)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: OrderListener) -> None:
        self._listeners.remove(listener)

    async def start(self) -> None:
        """Load every stored account; called once at start-up (and lazily on first use)."""
        async with self._lock:
            await self._start_unlocked()

    async def serve(self) -> None:
        """Nothing more: prices are computed, not fetched."""

    async def close(self) -> None:
        """Nothing to release: state is in the store."""

    async def create_account(self, account: str) -> None:
        async with self._lock:
            if not self._engine.has_account(account):
                await self._load(account)
            changes = self._engine.open_account(account)
            await self._persist(changes)

    async def _load(self, account: str) -> bool:
        state = await self._store.load(account)
        if state is None:
            return False
        self._engine.restore_account(account, state.balances, state.orders)
        return True

    async def _enter(self, account: str | None) -> tuple[int, Changes]:
        if not self._started:
            await self._start_unlocked()
        if account is not None and not self._engine.has_account(account) and not await self._load(account):
            raise VenueRejected("UNKNOWN_ACCOUNT")
        now_us = to_us(self._clock.now())
        return now_us, self._engine.advance(now_us)

    async def _start_unlocked(self) -> None:
        self._engine.sequence = max(self._engine.sequence, await self._store.max_sequence())
        for account in await self._store.accounts():
            if not self._engine.has_account(account):
                await self._load(account)
        self._started = True

    async def _persist(self, changes: Changes) -> dict[str, VenueOrder]:
        """Store what changed, then report changed orders to the listeners (returned as well)."""
        if not changes.orders and not changes.accounts:
            return {}
        balances = {a: self._engine.balances(a) for a in changes.accounts}
        orders = [self._engine.orders[i] for i in sorted(changes.orders)]
        await self._store.save(balances, orders)
        reports: dict[str, VenueOrder] = {}
        if self._listeners:
            for order in orders:
                report = reports[order.venue_order_id] = to_venue_order(order)
                for listener in self._listeners:
                    listener(order.account, report)
        return reports

    # -- market data, from memory (the MarketData port) ---------------------------------------
    def instrument(self, symbol: str) -> Instrument | None:
        market = self._engine.markets.get(symbol)
        return None if market is None else market.instrument

    def quote(self, symbol: str) -> Ticker | None:
        if symbol not in self._engine.markets:
            return None
        now = self._clock.now()
        bid, ask, last = self._engine.quote(symbol, to_us(now))
        return Ticker(symbol=symbol, bid=bid, ask=ask, last=last, time=now)

    def liquidity(self, symbol: str) -> Decimal | None:
        """A typical 24-hour volume in the quote currency (a real venue's 24-hour ticker says)."""
        market = self._engine.markets.get(symbol)
        return market.daily_volume if market is not None and market.daily_volume > 0 else None

    # -- the Venue port -------------------------------------------------------------------
    async def instruments(self) -> Sequence[Instrument]:
        return [m.instrument for m in self._engine.markets.values()]

    async def ticker(self, symbol: str) -> Ticker | None:
        return self.quote(symbol)

    async def place(self, account: str, request: OrderRequest) -> VenueOrder:
        async with self._lock:
            now_us, changes = await self._enter(account)
            try:
                order, placed = self._engine.place(account, request, now_us)
            except Exception:
                await self._persist(changes)  # what the market did before the refusal
                raise
            reports = await self._persist(changes.merge(placed))  # the market and the order: one write
            return reports.get(order.venue_order_id) or to_venue_order(order)

    async def cancel(self, account: str, venue_order_id: str) -> VenueOrder:
        async with self._lock:
            now_us, changes = await self._enter(account)
            try:
                order, canceled = self._engine.cancel(account, venue_order_id, now_us)
                changes.merge(canceled)
            finally:
                await self._persist(changes)
            return to_venue_order(order)

    async def order(self, account: str, venue_order_id: str) -> VenueOrder | None:
        async with self._lock:
            _, changes = await self._enter(account)
            await self._persist(changes)
            found = self._engine.find(account, venue_order_id)
            return None if found is None else to_venue_order(found)

    async def open_orders(self, account: str, symbol: str | None) -> Sequence[VenueOrder]:
        async with self._lock:
            _, changes = await self._enter(account)
            await self._persist(changes)
            ids = [i for s, ids in self._engine.open_ids.items() if symbol in (None, s) for i in ids]
            found = [self._engine.orders[i] for i in sorted(ids)]
            return [to_venue_order(o) for o in found if o.account == account]

    async def audit_credentials(self, credentials: Mapping[str, object]) -> CredentialPermissions:
        """What this credential may do.  The paper venue simulates a venue's report: a
        credential file may carry ``paper_api_restrictions`` (a Binance-style apiRestrictions
        object) to play any case; without it, the key is trade-only and IP-restricted."""
        report = credentials.get("paper_api_restrictions")
        if report is None:
            report = {
                "ipRestrict": True,
                "enableReading": True,
                "enableSpotAndMarginTrading": True,
                "enableWithdrawals": False,
                "enableInternalTransfer": False,
                "permitsUniversalTransfer": False,
            }
        if not isinstance(report, dict):
            raise VenueRejected("CREDENTIAL_REPORT", "paper_api_restrictions must be an object")
        try:
            return parse_api_restrictions(report)
        except RestrictionsFormatError as exc:
            raise VenueRejected("CREDENTIAL_REPORT", str(exc)) from None

    async def balances(self, account: str) -> Sequence[Balance]:
        async with self._lock:
            _, changes = await self._enter(account)
            await self._persist(changes)
            return [Balance(a, f, lk) for a, (f, lk) in sorted(self._engine.balances(account).items())]
