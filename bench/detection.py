"""Fraud-stage detection: labelled attacks injected into simulated bot traffic over real prices.

    .venv/bin/python bench/detection.py [--seed 1] [--days 2] [--bots 30] [--orders 10000] [--check]

A seeded population of bots trades for two simulated days (``--days``; longer if ``--orders``
legitimate orders need it) from Monday 00:00 UTC: periodic bar-driven bots (an order every
30-120 s, limit near the touch or market, lognormal sizes, 1 % of them 2-3x usual), grid
bots (a ladder of 3-6 levels a side re-placed every 2-6 minutes, each fill answered one level
away) and market makers (both sides quoted, requoted every 3-10 s).  Each bot has its own key,
account and address (some a second host in the same /24; three owners hold two accounts),
restarts about once a day (a 1-15 minute pause), trades GOOG only 14:30-21:00 UTC, and has
0.2 % of its orders refused by the risk stage.  Prices are the paper venue's bars (BTCUSD
monthly, one bar a simulated day; EURUSD hourly, one an hour; GOOG daily, one per six hours;
MEME-USD, the thin market, is BTCUSD x 1e-6), linearly interpolated second by second, times
seeded mean-reverting noise.  Attack episodes start at random times, each on a different bot's
key once that key has 50 judged orders: a stolen key pumping MEME-USD from a new network, a
runaway loop, three fat fingers, spoofing, wash trades between an owner's two accounts, slow
probing.

Every request goes in process through the real fraud stage (``FraudCheck`` over a
``FraudEngine`` with the default ``FraudSettings`` unless ``--fraud NAME=VALUE`` says otherwise,
``FraudMemory`` over ``MemoryFraudStore``, a ``FakeClock`` moved by the simulation) as the
pipeline drives it: the stage, the venue for what it allowed, the finalizers, the recorded
callbacks with a ledger index, the log phase's ``observe``.  Requests refused by earlier
stages (authz NOT_FOUND, risk RISK_REJECTED) reach only ``observe``; once the stage halts a
key the risk stage refuses its orders (a legitimate bot then stops).  The simulated venue
fills market orders at once and resting limit orders when the price path crosses them, and
reports every change to ``FraudEngine.on_venue_order``; the model learns every simulated
second.  Alerts go through a real ``AlertDispatcher`` (default dedupe and rate limits, on the
simulated clock) and ``WebhookSink`` to an aiohttp receiver on 127.0.0.1; latency is wall time
(``time.perf_counter``) from just before the triggering request's stage call to the receiver
holding the POST, with the simulation running on the same event loop.

A false alert is an alert, hold, deny or halt on a legitimate request (order, cancel or read);
the rate is per 10,000 legitimate orders of keys never attacked.  A legitimate order refused
for a self-match alone is not one: it would have traded against a resting order of the same
owner (a wash trade, whoever meant it), which is what self-match prevention is for; those are
counted apart as self-trades prevented.  Victims' keys are counted
apart: during their episode (until 600 s, the probing window, after its last request, or for
good if the episode got the key halted) and after it.  ``--check`` exits 1 when an issue 8
target is missed: every scenario detected, at most 2 malicious orders reaching the venue in
any scenario, at most 1 false alert per 10,000 legitimate orders, every episode's alerts out
within 1 s (an episode whose alerts were all suppressed as duplicates counts as missed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import logging
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import structlog
from aiohttp import web

from bastion.alerts import Alert, AlertDispatcher, TargetPolicy, WebhookSink
from bastion.clock import FakeClock
from bastion.config import AlertSettings, FraudSettings
from bastion.domain.instruments import Instrument
from bastion.domain.orders import (
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
    TimeInForce,
    VenueOrder,
)
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import Allow, Deny, Hold, Verdict
from bastion.errors import ConfigError, ErrorCode
from bastion.fraud.engine import Action, Assessment, FraudEngine
from bastion.pipeline.context import RequestContext
from bastion.pipeline.fraud import FraudCheck
from bastion.ports import KeyRecord
from bastion.schema import ROUTES
from bastion.state.fraud import FraudMemory
from bastion.store.memory import MemoryFraudStore
from bastion.venues.paper.data import load_series
from bastion.venues.paper.venue import DEFAULT_MARKETS, MarketSpec

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, 00:00 UTC
DAY = 86_400.0
ROUTE = {r.name: r for r in ROUTES}
SCOPES = frozenset(Scope)
ZERO = Decimal(0)

# Simulated seconds one historical bar spans, and the noise laid over the interpolated path.
BAR_SECONDS = {"BTCUSD": DAY, "EURUSD": 3_600.0, "GOOG": 21_600.0}
BAR_NAMES = {"BTCUSD": "monthly", "EURUSD": "hourly", "GOOG": "daily"}
NOISE_BPS = {"BTC-USD": 15.0, "EUR-USD": 2.0, "GOOG": 8.0, "MEME-USD": 40.0}
NOISE_SECONDS = 60.0  # the noise's mean-reversion time
SYMBOL_WEIGHTS = {"BTC-USD": 0.35, "EUR-USD": 0.30, "GOOG": 0.25, "MEME-USD": 0.10}
STYLE_SHARES = (("periodic", 0.63), ("grid", 0.3), ("maker", 0.07))
OWNER_PAIRS = 3  # owners holding two accounts
TWO_HOSTS = 0.3  # share of bots with a second host in the same /24
LEGIT_REJECT_RATE = 0.002  # legitimate orders the risk stage refuses (a limit reached)
LARGE_ORDER_RATE = 0.01  # legitimate orders 2-3x the bot's usual size
RESTART_EVERY = DAY  # mean time between a bot's restarts (it pauses 1-15 minutes)
READY_ORDERS = 50  # a victim's key has this many judged orders before its episode starts
BLOCKED = frozenset({"held", "denied", "halted"})
SCENARIOS = (
    "stolen_key",
    "runaway_loop",
    "fat_finger_buy_x10",
    "fat_finger_sell_x0.1",
    "fat_finger_qty_x100",
    "spoofing",
    "wash_trades",
    "slow_probing",
)

Proc = AsyncGenerator[float, None]
Later = Callable[[], Awaitable[None]]


# -- prices -------------------------------------------------------------------------------------
class PricePath:
    """One symbol's price in ticks, second by second: historical closes linearly interpolated
    (one bar spans BAR_SECONDS of simulated time) times exp(mean-reverting noise)."""

    def __init__(self, spec: MarketSpec, first_bar: int, rng: random.Random) -> None:
        scale = float(spec.scale)
        self.symbol = spec.symbol
        self.closes = [float(b.close) * scale for b in load_series(spec.series)]
        self.bar_seconds = BAR_SECONDS[spec.series]
        self.first_bar = first_bar
        self.tick = float(spec.tick_size)
        self.half_spread = float(spec.half_spread)
        sigma = NOISE_BPS[spec.symbol] / 10_000
        self._decay = math.exp(-1 / NOISE_SECONDS)
        self._shock = sigma * math.sqrt(1 - self._decay**2)
        self._rng = rng
        self._noise = rng.gauss(0.0, sigma)
        self.second = 0
        self.ticks = self._at(0)
        self._touch: tuple[int, int, int] | None = None

    def close(self, n: int) -> float:
        """Bar n's close; past the series' end it plays backward (as the paper venue does)."""
        count = len(self.closes)
        period = 2 * count - 2
        i = n % period
        return self.closes[i if i < count else period - i]

    def _at(self, second: int) -> float:
        position = self.first_bar + second / self.bar_seconds
        n = int(position)
        a, b = self.close(n), self.close(n + 1)
        return (a + (b - a) * (position - n)) * math.exp(self._noise) / self.tick

    def step(self) -> None:
        self.second += 1
        self._noise = self._noise * self._decay + self._shock * self._rng.gauss(0.0, 1.0)
        self.ticks = self._at(self.second)
        self._touch = None

    def touch(self) -> tuple[int, int, int]:
        """(bid, ask, last) in ticks, quoted as the paper venue does: the last price rounded
        down to the tick, a fixed half-spread rounded outward."""
        if self._touch is None:
            last = max(int(self.ticks), 1)
            bid = max(math.floor(last * (1 - self.half_spread) + 1e-9), 1)
            ask = math.ceil(last * (1 + self.half_spread) - 1e-9)
            self._touch = (bid, max(ask, bid + 1), last)
        return self._touch


class SimMarket:
    """What the stage reads of the market: the paper venue's instruments and daily volumes,
    quotes from the simulated prices."""

    def __init__(self, specs: tuple[MarketSpec, ...], paths: dict[str, PricePath], clock: FakeClock) -> None:
        self._instruments = {
            s.symbol: Instrument(
                symbol=s.symbol,
                base=s.base,
                quote=s.quote,
                asset_class=s.asset_class,
                tick_size=Decimal(s.tick_size),
                lot_size=Decimal(s.lot_size),
                min_notional=Decimal(s.min_notional),
            )
            for s in specs
        }
        self._volume = {s.symbol: Decimal(s.daily_volume) for s in specs}
        self._paths = paths
        self._clock = clock
        self._cache: dict[str, tuple[int, Ticker]] = {}

    def instrument(self, symbol: str) -> Instrument | None:
        return self._instruments.get(symbol)

    def quote(self, symbol: str) -> Ticker | None:
        path = self._paths.get(symbol)
        if path is None:
            return None
        cached = self._cache.get(symbol)
        if cached is not None and cached[0] == path.second:
            return cached[1]
        tick = self._instruments[symbol].tick_size
        bid, ask, last = path.touch()
        ticker = Ticker(symbol, tick * bid, tick * ask, tick * last, self._clock.now())
        self._cache[symbol] = (path.second, ticker)
        return ticker

    def liquidity(self, symbol: str) -> Decimal | None:
        volume = self._volume.get(symbol)
        return volume if volume is not None and volume > 0 else None


# -- the venue ----------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class SimOrder:
    bot: Bot  # whose key and account sent it
    request: OrderRequest
    price_n: int | None  # in ticks
    label: str  # "" for legitimate orders, else the episode's name
    holder: dict[str, SimOrder]  # the open orders of whoever placed it
    on_fill: Callable[[SimOrder], None] | None = None
    match: SimOrder | None = None  # the resting order of the same owner it is meant to trade with
    venue_id: str = ""
    created: datetime = START
    status: OrderStatus = OrderStatus.NEW
    fill_n: int | None = None

    @property
    def open(self) -> bool:
        return bool(self.venue_id) and self.status.is_open


class SimVenue:
    """Market orders (and limit orders crossing the touch) fill at the touch at once; resting
    limit orders fill at their price when the path crosses it.  Every change is reported to
    the fraud engine, as the venue's listeners are in the server."""

    def __init__(self, engine: FraudEngine, paths: dict[str, PricePath], clock: FakeClock) -> None:
        self._engine = engine
        self._paths = paths
        self._clock = clock
        self._ticks = {s.symbol: Decimal(s.tick_size) for s in DEFAULT_MARKETS}
        self._buys: dict[str, list[tuple[int, int, SimOrder]]] = {s: [] for s in paths}
        self._sells: dict[str, list[tuple[int, int, SimOrder]]] = {s: [] for s in paths}
        self._live: Counter[str] = Counter()
        self.open_by_key: dict[str, dict[str, SimOrder]] = {}
        self._seq = 0
        self.fills = 0

    def place(self, order: SimOrder) -> None:
        self._seq += 1
        order.venue_id = f"ord_{self._seq:024d}"
        order.created = self._clock.now()
        request = order.request
        bid, ask, _ = self._paths[request.symbol].touch()
        buy = request.side is Side.BUY
        match = order.match
        if (
            match is not None
            and match.open
            and order.price_n is not None
            and match.price_n is not None
            and (order.price_n >= match.price_n if buy else order.price_n <= match.price_n)
        ):
            self._fill(match, match.price_n)  # the two accounts trade with each other
            self._fill(order, match.price_n)
            return
        if order.price_n is None or (buy and order.price_n >= ask) or (not buy and order.price_n <= bid):
            self._fill(order, ask if buy else bid)
            return
        order.holder[request.client_order_id] = order
        self.open_by_key.setdefault(order.bot.key.key_id, {})[order.venue_id] = order
        book = self._buys if buy else self._sells
        heapq.heappush(book[request.symbol], (-order.price_n if buy else order.price_n, self._seq, order))
        self._live[f"{request.symbol}/{request.side}"] += 1
        self._report(order)

    def cancel(self, order: SimOrder) -> None:
        if not order.open:
            return
        order.status = OrderStatus.CANCELED
        self._close(order)
        self._report(order)

    def tick(self, symbol: str) -> None:
        """Fill what the path's price crossed in this second."""
        price = self._paths[symbol].ticks
        buys, sells = self._buys[symbol], self._sells[symbol]
        while buys and -buys[0][0] >= price:
            order = heapq.heappop(buys)[2]
            if order.open and order.price_n is not None:
                self._fill(order, order.price_n)
        while sells and sells[0][0] <= price:
            order = heapq.heappop(sells)[2]
            if order.open and order.price_n is not None:
                self._fill(order, order.price_n)

    def _fill(self, order: SimOrder, price_n: int) -> None:
        was_open = order.open
        order.status = OrderStatus.FILLED
        order.fill_n = price_n
        self.fills += 1
        if was_open:
            self._close(order)
        self._report(order)
        if order.on_fill is not None:
            order.on_fill(order)

    def _close(self, order: SimOrder) -> None:
        request = order.request
        order.holder.pop(request.client_order_id, None)
        self.open_by_key.get(order.bot.key.key_id, {}).pop(order.venue_id, None)
        side = f"{request.symbol}/{request.side}"
        self._live[side] -= 1
        book = (self._buys if request.side is Side.BUY else self._sells)[request.symbol]
        if len(book) > 256 and len(book) > 4 * self._live[side]:  # drop what was cancelled
            book[:] = [entry for entry in book if entry[2].open]
            heapq.heapify(book)

    def _report(self, order: SimOrder) -> None:
        request = order.request
        now = self._clock.now()
        price = None if order.fill_n is None else self._ticks[request.symbol] * order.fill_n
        filled = order.status is OrderStatus.FILLED
        self._engine.on_venue_order(
            order.bot.account,
            VenueOrder(
                venue_order_id=order.venue_id,
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                time_in_force=request.time_in_force,
                quantity=request.quantity,
                price=request.price,
                status=order.status,
                filled_quantity=request.quantity if filled else ZERO,
                average_price=price,
                created_at=order.created,
                updated_at=now,
                fills=(Fill(price, request.quantity, now),) if filled and price is not None else (),
            ),
        )


# -- bots -----------------------------------------------------------------------------------------
class Bot:
    style = "bot"

    def __init__(
        self,
        index: int,
        rng: random.Random,
        symbol: str,
        account: str,
        owner: str,
        hosts: tuple[str, ...],
        size: float,
        created: datetime,
    ) -> None:
        self.index = index
        self.rng = rng
        self.symbol = symbol
        self.account = account
        self.owner = owner
        self.hosts = hosts
        self.size = size  # usual notional, quote currency
        self.key = KeyRecord(
            key_id=f"bst_bench{index:03d}",
            account=account,
            alg="ed25519",
            public_key=bytes(32),
            scopes=SCOPES,
            created_at=created,
            expires_at=created + timedelta(days=365),
            revoked_at=None,
        )
        self.principal = Principal(self.key.key_id, account, SCOPES)
        self.open: dict[str, SimOrder] = {}
        self.active = True
        self.stopped = False
        self.restart_at = rng.expovariate(1 / RESTART_EVERY)
        self.read_every = rng.uniform(120, 900)
        self._counter = 0
        self.setup()

    def setup(self) -> None:
        """The style's own parameters, drawn from ``self.rng``."""

    def __repr__(self) -> str:
        return f"{self.style} {self.symbol}"

    def cid(self) -> str:
        self._counter += 1
        return f"b{self.index}-{self._counter}"

    def host(self) -> str:
        return self.hosts[1] if len(self.hosts) > 1 and self.rng.random() < 0.25 else self.hosts[0]

    def notional(self) -> float:
        return self.size * self.rng.lognormvariate(0.0, 0.3)

    def run(self, sim: Sim) -> Proc:
        raise NotImplementedError

    async def reads(self, sim: Sim) -> Proc:
        """Now and then the bot looks at its account or its orders."""
        yield self.rng.uniform(0, self.read_every)
        while not self.stopped:
            if self.active and not sim.closed_for(self.symbol):
                await sim.read(self, self.rng.choice(("get_account", "list_orders")))
            yield self.read_every * self.rng.uniform(0.5, 1.5)


class PeriodicBot(Bot):
    """One order a bar (30-120 s), limit near the touch or market; cancels what did not fill."""

    style = "periodic"

    def setup(self) -> None:
        rng = self.rng
        self.interval = rng.uniform(30, 120)
        self.p_market = rng.choice((0.0, 0.2, 0.5, 0.9))
        self.momentum = rng.random() < 0.5
        self.ttl = rng.uniform(15, 90)

    async def run(self, sim: Sim) -> Proc:
        rng = self.rng
        yield rng.uniform(0, self.interval)
        seen: int | None = None
        while not self.stopped:
            wait = await sim.pause(self)
            if wait:
                yield wait
                continue
            for order in list(self.open.values()):
                await sim.cancel(self, order)
            bid, ask, last = sim.touch(self.symbol)
            if seen is None or seen == last or rng.random() < 0.2:
                side = rng.choice((Side.BUY, Side.SELL))
            else:
                side = Side.BUY if (last > seen) == self.momentum else Side.SELL
            seen = last
            notional = self.notional()
            if rng.random() < LARGE_ORDER_RATE:
                notional *= rng.uniform(2, 3)
            if rng.random() < self.p_market:
                await sim.order(self, side, OrderType.MARKET, sim.lots(self.symbol, notional), None)
            else:
                offset = int(last * rng.uniform(0, 2) / 10_000)
                if rng.random() < 0.25:
                    price = ask if side is Side.BUY else bid  # take the touch
                elif side is Side.BUY:
                    price = min(bid + offset, ask - 1)
                else:
                    price = max(ask - offset, bid + 1)
                placed = await sim.order(self, side, OrderType.LIMIT, sim.lots(self.symbol, notional), price)
                if placed is not None and placed.open:
                    sim.after(self.ttl * rng.uniform(0.8, 1.2), self._expire(sim, placed))
            yield self.interval * rng.uniform(0.75, 1.25)

    def _expire(self, sim: Sim, order: SimOrder) -> Later:
        async def expire() -> None:
            if order.open:
                await sim.cancel(self, order)

        return expire


class GridBot(Bot):
    """A ladder of resting limit orders around the price, refreshed every few minutes; a
    filled level is answered by the opposite order one level away."""

    style = "grid"

    def setup(self) -> None:
        rng = self.rng
        self.levels = rng.randint(3, 6)
        self.spacing = rng.uniform(10, 50) / 10_000
        self.refresh = rng.uniform(120, 360)
        self._sim: Sim | None = None

    async def run(self, sim: Sim) -> Proc:
        self._sim = sim
        rng = self.rng
        yield rng.uniform(0, self.refresh)
        while not self.stopped:
            wait = await sim.pause(self)
            if wait:
                yield wait
                continue
            for order in list(self.open.values()):
                await sim.cancel(self, order)
                yield rng.uniform(0.02, 0.08)
            _, _, last = sim.touch(self.symbol)
            for k in range(1, self.levels + 1):
                for side in (Side.BUY, Side.SELL):
                    if side is Side.BUY:
                        price = max(math.floor(last * (1 - k * self.spacing)), 1)
                    else:
                        price = math.ceil(last * (1 + k * self.spacing))
                    lots = sim.lots(self.symbol, self.notional(), price)
                    await sim.order(self, side, OrderType.LIMIT, lots, price, on_fill=self._filled)
                    yield rng.uniform(0.03, 0.15)
            yield self.refresh * rng.uniform(0.8, 1.2)

    def _filled(self, order: SimOrder) -> None:
        sim = self._sim
        if sim is None or order.fill_n is None or not self.active:
            return
        if order.request.side is Side.BUY:
            side, price = Side.SELL, math.ceil(order.fill_n * (1 + self.spacing))
        else:
            side, price = Side.BUY, max(math.floor(order.fill_n * (1 - self.spacing)), 1)

        async def answer() -> None:
            if self.active and not sim.closed_for(self.symbol):
                lots = sim.lots(self.symbol, self.notional(), price)
                await sim.order(self, side, OrderType.LIMIT, lots, price, on_fill=self._filled)

        sim.after(self.rng.uniform(0.2, 1.0), answer)


class MakerBot(Bot):
    """Quotes both sides at (or a tick outside) the touch; cancels and requotes every 3-10 s."""

    style = "maker"

    def setup(self) -> None:
        rng = self.rng
        self.interval = rng.uniform(3, 10)
        self.width = rng.choice((0, 0, 1))

    async def run(self, sim: Sim) -> Proc:
        rng = self.rng
        yield rng.uniform(0, self.interval)
        while not self.stopped:
            wait = await sim.pause(self)
            if wait:
                yield wait
                continue
            for order in list(self.open.values()):
                await sim.cancel(self, order)
            bid, _, _ = sim.touch(self.symbol)
            price = max(bid - self.width, 1)
            await sim.order(
                self, Side.BUY, OrderType.LIMIT, sim.lots(self.symbol, self.notional(), price), price
            )
            yield rng.uniform(0.01, 0.05)
            _, ask, _ = sim.touch(self.symbol)
            price = ask + self.width
            await sim.order(
                self, Side.SELL, OrderType.LIMIT, sim.lots(self.symbol, self.notional(), price), price
            )
            yield self.interval * rng.uniform(0.85, 1.15)


STYLES: dict[str, type[Bot]] = {"periodic": PeriodicBot, "grid": GridBot, "maker": MakerBot}


# -- bookkeeping ----------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Rec:
    """One request and what became of it."""

    label: str
    route: str
    key_id: str
    at: float
    malicious: bool = False
    outcome: str = "allowed"  # allowed | held | denied | halted (key halted) | refused (earlier stage)
    action: str = "allow"  # the stage's decision ("refused": the stage never saw it)
    rules: tuple[str, ...] = ()
    flagged: bool = False  # an alert, hold, deny or halt
    halted: bool = False  # this request made the stage halt the key
    reasons: str = ""  # the signals' reasons, when the stage did not simply allow
    start: float = 0.0  # perf_counter before the stage (or the log phase)
    alerts: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass(eq=False)
class Episode:
    name: str
    bots: tuple[Bot, ...]
    at: float
    rng: random.Random
    recs: list[Rec] = field(default_factory=list)
    open: dict[str, SimOrder] = field(default_factory=dict)
    symbol: str = ""
    started: float | None = None
    ended: float | None = None
    done: bool = False

    @property
    def victim(self) -> str:
        return " + ".join(repr(b) for b in self.bots)


GROUPS = ("never attacked", "victim, during", "victim, after")


@dataclass
class Group:
    """Legitimate requests of one group of keys: keys never attacked; victims' keys from their
    episode's first request to PROBE_WINDOW after its last (or halted by it); victims' keys
    after that."""

    orders: int = 0
    requests: int = 0
    flagged: int = 0  # an alert, hold, deny or halt on a legitimate request: a false alert
    self_trades: int = 0  # legitimate orders refused for a self-match alone (not false alerts)
    blocked: int = 0  # legitimate orders held, denied, or refused because the key was halted
    halts: int = 0
    causes: Counter[str] = field(default_factory=Counter)
    bots: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # cause -> its first case


@dataclass
class Legit:
    orders: int = 0
    cancels: int = 0
    reads: int = 0
    risk_refused: int = 0
    stopped: int = 0  # bots that stopped on finding their key halted
    groups: dict[str, Group] = field(default_factory=lambda: {g: Group() for g in GROUPS})
    cpu_ns: dict[str, list[int]] = field(default_factory=dict)  # bot style -> the stage's CPU per order


# -- the simulation -------------------------------------------------------------------------------
class Sim:
    def __init__(
        self, seed: int, days: float, dispatcher: AlertDispatcher, clock: FakeClock, settings: FraudSettings
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.days = days
        first_bars: dict[str, int] = {}
        self.paths: dict[str, PricePath] = {}
        for spec in DEFAULT_MARKETS:
            if spec.series not in first_bars:
                count = len(load_series(spec.series))
                span = int(days * DAY / BAR_SECONDS[spec.series]) + 2
                first_bars[spec.series] = self.rng.randrange(max(1, count - span))
            self.paths[spec.symbol] = PricePath(
                spec, first_bars[spec.series], random.Random(self.rng.random())
            )
        self.first_bars = first_bars
        self.specs = {s.symbol: s for s in DEFAULT_MARKETS}
        self._ticks = {s.symbol: Decimal(s.tick_size) for s in DEFAULT_MARKETS}
        self._lots = {s.symbol: Decimal(s.lot_size) for s in DEFAULT_MARKETS}
        self.market = SimMarket(DEFAULT_MARKETS, self.paths, clock)
        self.engine = FraudEngine(settings)
        self.store = MemoryFraudStore()
        self.memory = FraudMemory(self.store)
        self.venue = SimVenue(self.engine, self.paths, clock)
        self.dispatcher = dispatcher
        self.stage = FraudCheck(
            self.engine,
            self.memory,
            self.market,
            clock,
            alert=self._alert,
            halt=self._halt,
            on_decision=self._decided,
        )
        self.now = 0.0
        self._second = 0
        self._heap: list[tuple[float, int, Proc | Later]] = []
        self._seq = 0
        self._index = 0
        self.current: Rec | None = None
        self.halted: dict[str, Rec] = {}  # key id -> the request that halted it
        self._halting: list[str] = []
        self.victims: dict[str, Episode] = {}  # key id -> its episode
        self._halt_collateral: dict[str, bool] = {}  # key id -> halted because of an episode
        self.expected: dict[tuple[int, str, str], float] = {}  # alert -> perf_counter at its request
        self.legit = Legit()
        self.episodes: list[Episode] = []
        self.bots: list[Bot] = []
        self.bot_of: dict[str, Bot] = {}
        self._flushed = 0

    # -- the clock and the event queue --------------------------------------------------------
    def spawn(self, proc: Proc, delay: float = 0.0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, proc))

    def after(self, delay: float, later: Later) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, later))

    def _advance(self, at: float) -> None:
        """Move the market second by second to ``at`` (fills, learning), then the clock."""
        target = int(at)
        while self._second < target:
            self._second += 1
            self._set_clock(float(self._second))
            for symbol, path in self.paths.items():
                path.step()
                self.venue.tick(symbol)
            self.engine.baselines.learn_pending()  # the server learns every 50 ms, off the path
        self._set_clock(at)

    def _set_clock(self, at: float) -> None:
        self.now = at
        target = START + timedelta(seconds=at)
        self.clock.advance((target - self.clock.now()).total_seconds())

    async def run(self, until: float, min_orders: int) -> None:
        while self._heap:
            at, _, item = heapq.heappop(self._heap)
            if at >= until and self.legit.orders >= min_orders and all(e.done for e in self.episodes):
                break
            self._advance(at)
            if isinstance(item, AsyncGenerator):
                try:
                    delay = await item.__anext__()
                except StopAsyncIteration:
                    continue
                self._seq += 1
                heapq.heappush(self._heap, (at + max(delay, 0.0), self._seq, item))
            else:
                await item()
            await asyncio.sleep(0)  # the alert worker and the webhook receiver run between events
            if self._second >= self._flushed + 60:  # learned sightings written behind
                self._flushed = self._second
                await self.memory.flush()

    # -- markets --------------------------------------------------------------------------------
    def touch(self, symbol: str) -> tuple[int, int, int]:
        return self.paths[symbol].touch()

    def lots(self, symbol: str, notional: float, price_n: int | None = None) -> int:
        """Whole lots for ``notional`` at ``price_n`` (the last price if None), at least the
        instrument's minimum notional."""
        spec = self.specs[symbol]
        price = (price_n if price_n is not None else self.touch(symbol)[2]) * float(spec.tick_size)
        lot_value = max(price * float(spec.lot_size), 1e-12)
        least = math.ceil(float(spec.min_notional) / lot_value - 1e-9)
        return max(round(notional / lot_value), least, 1)

    def closed_for(self, symbol: str) -> float:
        """Seconds until ``symbol``'s market opens (0: open).  GOOG trades 14:30-21:00 UTC on
        weekdays, EUR-USD from Sunday 22:00 to Friday 22:00, crypto always."""
        now = START + timedelta(seconds=self.now)
        if symbol == "GOOG":
            day = now.replace(hour=14, minute=30, second=0, microsecond=0)
            close = now.replace(hour=21, minute=0, second=0, microsecond=0)
            if now.weekday() < 5 and day <= now < close:
                return 0.0
            nxt = day if now < day else day + timedelta(days=1)
            while nxt.weekday() >= 5:
                nxt += timedelta(days=1)
            return (nxt - now).total_seconds()
        if symbol == "EUR-USD":
            week = now.weekday() * DAY + now.hour * 3600 + now.minute * 60 + now.second
            if 4 * DAY + 22 * 3600 <= week < 6 * DAY + 22 * 3600:
                return 6 * DAY + 22 * 3600 - week
        return 0.0

    async def pause(self, bot: Bot) -> float:
        """Seconds the bot waits (its market is closed, or it restarts), its orders cancelled."""
        wait = self.closed_for(bot.symbol)
        if wait:
            wait += bot.rng.uniform(0, 300)
        elif self.now >= bot.restart_at:
            wait = bot.rng.uniform(60, 900)
            bot.restart_at = self.now + wait + bot.rng.expovariate(1 / RESTART_EVERY)
        if wait:
            bot.active = False
            for order in list(bot.open.values()):
                await self.cancel(bot, order)
            self.after(wait, self._wake(bot))
        return wait

    @staticmethod
    def _wake(bot: Bot) -> Later:
        async def wake() -> None:
            bot.active = True

        return wake

    # -- requests -------------------------------------------------------------------------------
    def _ctx(
        self,
        bot: Bot,
        route: str,
        host: str,
        payload: object | None = None,
        params: dict[str, str] | None = None,
    ) -> RequestContext:
        spec = ROUTE[route]
        params = params or {}
        self._index += 1
        return RequestContext(
            request_id=f"req_{self._index}",
            route=spec,
            method=spec.method,
            scheme="https",
            authority="bastion.example:8443",
            path=spec.path.replace("{id}", params.get("id", "")),
            query="",
            headers={},
            body=b"",
            client_ip=host,
            path_params=params,
            received_at=self.clock.now(),
            payload=payload,
            principal=bot.principal,
            key=bot.key,
        )

    async def order(
        self,
        bot: Bot,
        side: Side,
        kind: OrderType,
        lots: int,
        price_n: int | None,
        *,
        symbol: str = "",
        episode: Episode | None = None,
        malicious: bool = False,
        host: str = "",
        on_fill: Callable[[SimOrder], None] | None = None,
        match: SimOrder | None = None,
    ) -> SimOrder | None:
        """Place an order through the stage; the order if it reached the venue."""
        symbol = symbol or bot.symbol
        market = kind is OrderType.MARKET
        request = OrderRequest(
            client_order_id=bot.cid(),
            symbol=symbol,
            side=side,
            type=kind,
            quantity=self._lots[symbol] * lots,
            price=None if price_n is None else self._ticks[symbol] * max(price_n, 1),
            time_in_force=TimeInForce.IOC if market else TimeInForce.GTC,
        )
        label = episode.name if episode is not None else ""
        holder = episode.open if episode is not None else bot.open
        placed = SimOrder(
            bot, request, None if price_n is None else max(price_n, 1), label, holder, on_fill, match
        )
        refused = None
        if episode is None and self.rng.random() < LEGIT_REJECT_RATE:
            refused = Deny("risk", ErrorCode.RISK_REJECTED, "position limit reached", "MAX_POSITION")
        rec = Rec(label, "place_order", bot.key.key_id, self.now, malicious)
        ctx = self._ctx(bot, "place_order", host or bot.host(), request)
        await self._run(ctx, rec, episode, place=placed, refused=refused)
        if rec.outcome == "halted" and episode is None and not bot.stopped:
            bot.stopped = True  # TRADING_HALTED: the bot stops until its operator resumes the key
            self.legit.stopped += 1
        return placed if placed.venue_id else None

    async def cancel(
        self, bot: Bot, order: SimOrder, *, episode: Episode | None = None, host: str = ""
    ) -> None:
        if not order.open:
            return
        rec = Rec(episode.name if episode else "", "cancel_order", bot.key.key_id, self.now)
        ctx = self._ctx(bot, "cancel_order", host or bot.host(), params={"id": order.venue_id})
        await self._run(ctx, rec, episode, cancel=order)

    async def read(self, bot: Bot, route: str, *, episode: Episode | None = None, host: str = "") -> None:
        rec = Rec(episode.name if episode else "", route, bot.key.key_id, self.now)
        await self._run(self._ctx(bot, route, host or bot.host()), rec, episode)

    async def refused(
        self,
        bot: Bot,
        route: str,
        deny: Deny,
        *,
        episode: Episode,
        host: str = "",
        payload: object | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        """A request an earlier stage refused: only the log phase's observer sees it."""
        rec = Rec(episode.name, route, bot.key.key_id, self.now)
        ctx = self._ctx(bot, route, host or bot.host(), payload, params)
        await self._run(ctx, rec, episode, refused=deny)

    async def _run(
        self,
        ctx: RequestContext,
        rec: Rec,
        episode: Episode | None,
        *,
        place: SimOrder | None = None,
        cancel: SimOrder | None = None,
        refused: Deny | None = None,
    ) -> None:
        """As the pipeline does: the stage, the venue, finalizers, recorded callbacks, observers."""
        if episode is not None and episode.started is None:
            episode.started = self.now
        self.current = rec
        rec.start = time.perf_counter()
        verdict: Verdict
        if place is not None and rec.key_id in self.halted:  # the risk stage checks this first
            verdict = Deny("risk", ErrorCode.RISK_REJECTED, "trading is halted", "TRADING_HALTED")
            rec.outcome, rec.action = "halted", "refused"
        elif refused is not None:
            verdict, rec.outcome, rec.action = refused, "refused", "refused"
        else:
            cpu = time.process_time_ns()
            verdict = await self.stage(ctx)
            cpu = time.process_time_ns() - cpu
            if place is not None and episode is None:
                self.legit.cpu_ns.setdefault(place.bot.style, []).append(cpu)
            if isinstance(verdict, Allow):
                if place is not None:
                    self.venue.place(place)
                elif cancel is not None:
                    self.venue.cancel(cancel)
            else:
                rec.outcome = "held" if isinstance(verdict, Hold) else "denied"
        for finalize in ctx.finalizers:
            finalize(verdict)
        self.stage.observe(ctx, verdict)  # as the pipeline does: before the entry, then its index
        self._index += 1
        for recorded in ctx.recorded:
            recorded(self._index)
        self.current = None
        while self._halting:  # the halt cancels the key's open orders, as set_trading_state does
            key_id = self._halting.pop()
            for order in list(self.venue.open_by_key.get(key_id, {}).values()):
                self.venue.cancel(order)
        if episode is not None:
            episode.recs.append(rec)
            if rec.halted:
                self._halt_collateral.setdefault(rec.key_id, True)
        else:
            self._count(rec)

    def group(self, rec: Rec) -> str:
        """Which of GROUPS a legitimate request falls in: a victim's key counts as under attack
        from its episode's first request until the probing window (600 s) after its last, and
        for good once the episode got it halted."""
        ep = self.victims.get(rec.key_id)
        if ep is None or ep.started is None or rec.at < ep.started:
            return GROUPS[0]
        if rec.outcome == "halted" and self._halt_collateral.get(rec.key_id, False):
            return GROUPS[1]
        window = self.stage.settings.probe_window_seconds
        return GROUPS[1] if ep.ended is None or rec.at <= ep.ended + window else GROUPS[2]

    def _count(self, rec: Rec) -> None:
        legit = self.legit
        if rec.route == "place_order":
            legit.orders += 1
        elif rec.route == "cancel_order":
            legit.cancels += 1
        else:
            legit.reads += 1
        if rec.outcome == "refused":
            legit.risk_refused += 1
        name = self.group(rec)
        if rec.halted:
            self._halt_collateral.setdefault(rec.key_id, name == GROUPS[1])
        group = legit.groups[name]
        group.requests += 1
        group.halts += rec.halted
        if rec.route == "place_order":
            group.orders += 1
            group.blocked += rec.outcome in BLOCKED
        if not rec.flagged:
            return
        if rec.rules == ("self_match",):  # a would-be trade with the owner's own resting order
            group.self_trades += 1
            return
        group.flagged += 1
        cause = f"{'+'.join(rec.rules) or 'halt'} → {rec.action}"
        group.causes[cause] += 1
        bot = self.bot_of[rec.key_id]
        group.bots[f"{bot!r} | {cause}"] += 1
        if cause not in group.examples:
            when = START + timedelta(seconds=rec.at)
            detail = rec.reasons or ("the key was halted" if rec.outcome == "halted" else cause)
            group.examples[cause] = f"{when:%a %H:%M:%S} {bot!r} ({rec.key_id}) {rec.route}: {detail}"

    # -- the stage's callbacks ----------------------------------------------------------------
    def _decided(self, assessment: Assessment) -> None:
        rec = self.current
        if rec is None:
            return
        rec.action = assessment.action.value
        rec.rules = tuple(s.rule for s in assessment.signals)
        if assessment.action is not Action.ALLOW:
            rec.flagged = True
            rec.reasons = "; ".join(f"{s.rule}: {s.reason}" for s in assessment.signals)

    def _alert(self, alert: Alert) -> bool:
        rec = self.current
        queued = self.dispatcher.submit(alert)
        if rec is not None:
            rec.flagged = True
            if rec.action == "refused":  # the log phase's observer raised it (probing)
                rec.action = alert.action
            rule = alert.rule.removeprefix("fraud.")
            if rule not in rec.rules:
                rec.rules = (*rec.rules, rule)
            if queued:
                sent = (
                    alert.ledger_index if alert.ledger_index is not None else -1,
                    alert.rule,
                    alert.action,
                )
                self.expected[sent] = rec.start
                rec.alerts.append(sent)
        return queued

    def _halt(self, key_id: str, reason: str) -> None:
        rec = self.current
        if rec is not None:
            rec.flagged = rec.halted = True
            self.halted.setdefault(key_id, rec)
        self._halting.append(key_id)


# -- the population -------------------------------------------------------------------------------
def population(sim: Sim, count: int) -> list[Bot]:
    rng = sim.rng
    styles: list[str] = []
    for style, share in STYLE_SHARES:
        styles += [style] * max(1, round(count * share))
    styles = styles[:count]
    rng.shuffle(styles)
    symbols, weights = zip(*SYMBOL_WEIGHTS.items(), strict=True)
    bots: list[Bot] = []
    for i, style in enumerate(styles):
        symbol = rng.choices(symbols, weights)[0]
        pair = i // 2 if i < 2 * OWNER_PAIRS else None
        account = f"acct{i:02d}"
        owner = f"owner{pair}" if pair is not None else account
        net = f"{rng.choice((3, 18, 34, 35, 44, 52, 54))}.{rng.randint(0, 255)}.{i}"
        hosts = (f"{net}.10", f"{net}.11") if rng.random() < TWO_HOSTS else (f"{net}.10",)
        spec = sim.specs[symbol]
        last = sim.touch(symbol)[2] * float(spec.tick_size)
        size = math.exp(rng.uniform(math.log(500), math.log(20_000)))
        size = max(size, 10 * last * float(spec.lot_size), 5 * float(spec.min_notional))
        created = START - timedelta(days=rng.uniform(5, 120))
        bot = STYLES[style](i, random.Random(rng.random()), symbol, account, owner, hosts, size, created)
        sim.memory.set_owner(account, owner)
        sim.store.owners[account] = owner
        bots.append(bot)
    return bots


# -- attacks ----------------------------------------------------------------------------------------
def thief_address(rng: random.Random) -> str:
    return f"185.220.{rng.randint(100, 103)}.{rng.randint(2, 250)}"


async def stolen_key(sim: Sim, ep: Episode) -> Proc:
    """The key, from an address in a network it never used, buys the thin MEME-USD 30-60 %
    above the reference, six orders a few seconds apart."""
    bot, rng = ep.bots[0], ep.rng
    thief = thief_address(rng)
    for _ in range(6):
        last = sim.touch("MEME-USD")[2]
        price = round(last * rng.uniform(1.3, 1.6))
        lots = sim.lots("MEME-USD", rng.uniform(2_000, 10_000), price)
        limit = OrderType.LIMIT
        await sim.order(
            bot, Side.BUY, limit, lots, price, symbol="MEME-USD", episode=ep, malicious=True, host=thief
        )
        yield rng.uniform(1, 8)


async def runaway_loop(sim: Sim, ep: Episode) -> Proc:
    """A loop bug: the bot's usual order, the same every time, every 100-300 ms, 50 times."""
    bot, rng = ep.bots[0], ep.rng
    side = rng.choice((Side.BUY, Side.SELL))
    bid, ask, _ = sim.touch(bot.symbol)
    market = isinstance(bot, PeriodicBot) and bot.p_market >= 0.5
    price = None if market else (bid if side is Side.BUY else ask)
    lots = sim.lots(bot.symbol, bot.size, price)
    kind = OrderType.MARKET if market else OrderType.LIMIT
    for _ in range(50):
        await sim.order(bot, side, kind, lots, price, episode=ep, malicious=True)
        yield rng.uniform(0.1, 0.3)


def fat_finger(variant: str) -> Callable[[Sim, Episode], Proc]:
    async def body(sim: Sim, ep: Episode) -> Proc:
        """One limit order: priced 10x (a buy) or 0.1x (a sell), or 100x the usual quantity."""
        bot, rng = ep.bots[0], ep.rng
        bid, ask, last = sim.touch(bot.symbol)
        lots = sim.lots(bot.symbol, bot.notional())
        if variant == "buy_x10":
            side, price = Side.BUY, last * 10
        elif variant == "sell_x0.1":
            side, price = Side.SELL, max(round(last * 0.1), 1)
        else:
            side = rng.choice((Side.BUY, Side.SELL))
            price, lots = (bid if side is Side.BUY else ask), lots * 100
        await sim.order(bot, side, OrderType.LIMIT, lots, price, episode=ep, malicious=True)
        yield 1.0

    return body


async def spoofing(sim: Sim, ep: Episode) -> Proc:
    """A small genuine order on one side; on the other, 20 large limit orders (10-20x usual)
    2-5 ticks off the touch, each cancelled within about a second."""
    bot, rng = ep.bots[0], ep.rng
    spoof = rng.choice((Side.BUY, Side.SELL))
    genuine_side = Side.SELL if spoof is Side.BUY else Side.BUY
    bid, ask, _ = sim.touch(bot.symbol)
    price = ask if genuine_side is Side.SELL else bid
    small = sim.lots(bot.symbol, bot.size * 0.3, price)
    genuine = await sim.order(bot, genuine_side, OrderType.LIMIT, small, price, episode=ep)
    yield rng.uniform(0.5, 2)
    for _ in range(20):
        bid, ask, _ = sim.touch(bot.symbol)
        away = rng.randint(2, 5)
        price = bid - away if spoof is Side.BUY else ask + away
        lots = sim.lots(bot.symbol, bot.size * rng.uniform(10, 20), price)
        placed = await sim.order(bot, spoof, OrderType.LIMIT, lots, price, episode=ep, malicious=True)
        yield rng.uniform(0.4, 1.2)
        if placed is not None:
            await sim.cancel(bot, placed, episode=ep)
        yield rng.uniform(0.3, 1.5)
    if genuine is not None:
        await sim.cancel(bot, genuine, episode=ep)


async def wash_trades(sim: Sim, ep: Episode) -> Proc:
    """Two accounts of one owner: one rests a sell inside the spread, the other sends the buy
    that crosses it, 10 pairs.  The crossing buys are the malicious orders."""
    seller, buyer = ep.bots
    rng, symbol = ep.rng, ep.symbol
    for _ in range(10):
        bid, ask, _ = sim.touch(symbol)
        price = ask - 1 if ask - bid > 1 else ask
        lots = sim.lots(symbol, seller.size, price)
        rest = await sim.order(seller, Side.SELL, OrderType.LIMIT, lots, price, symbol=symbol, episode=ep)
        yield rng.uniform(0.3, 1.5)
        await sim.order(
            buyer,
            Side.BUY,
            OrderType.LIMIT,
            lots,
            price,
            symbol=symbol,
            episode=ep,
            malicious=True,
            match=rest,
        )
        yield rng.uniform(2, 5)
        if rest is not None and rest.open:
            await sim.cancel(seller, rest, episode=ep)
        yield rng.uniform(15, 60)


async def slow_probing(sim: Sim, ep: Episode) -> Proc:
    """The key (from its bot's own host: malware there, so no new network) asks for other
    accounts' orders (authz: NOT_FOUND) and breaks limits (risk: RISK_REJECTED), one request
    every 20-60 s, 30 in all, with a small valid order after every third."""
    bot, rng = ep.bots[0], ep.rng
    host = bot.hosts[0]
    for n in range(30):
        if n % 2 == 0:
            route = rng.choice(("get_order", "cancel_order"))
            other = f"ord_{rng.randrange(10**23, 10**24):024d}"
            deny = Deny("authz", ErrorCode.NOT_FOUND, "another account's order")
            await sim.refused(bot, route, deny, episode=ep, host=host, params={"id": other})
        else:
            bid, _, _ = sim.touch(bot.symbol)
            lots = sim.lots(bot.symbol, bot.size * 1_000, bid)
            request = OrderRequest(
                bot.cid(),
                bot.symbol,
                Side.BUY,
                OrderType.LIMIT,
                sim._lots[bot.symbol] * lots,
                sim._ticks[bot.symbol] * bid,
                TimeInForce.GTC,
            )
            deny = Deny(
                "risk", ErrorCode.RISK_REJECTED, "over the order notional limit", "MAX_ORDER_NOTIONAL"
            )
            await sim.refused(bot, "place_order", deny, episode=ep, host=host, payload=request)
        if n % 3 == 2:
            yield rng.uniform(5, 20)
            bid, ask, _ = sim.touch(bot.symbol)
            side = rng.choice((Side.BUY, Side.SELL))
            price = bid if side is Side.BUY else ask
            lots = sim.lots(bot.symbol, bot.size * 0.2, price)
            await sim.order(bot, side, OrderType.LIMIT, lots, price, episode=ep, malicious=True, host=host)
        yield rng.uniform(20, 60)


BODIES: dict[str, Callable[[Sim, Episode], Proc]] = {
    "stolen_key": stolen_key,
    "runaway_loop": runaway_loop,
    "fat_finger_buy_x10": fat_finger("buy_x10"),
    "fat_finger_sell_x0.1": fat_finger("sell_x0.1"),
    "fat_finger_qty_x100": fat_finger("qty_x100"),
    "spoofing": spoofing,
    "wash_trades": wash_trades,
    "slow_probing": slow_probing,
}


def plan_episodes(sim: Sim, bots: list[Bot], styles: dict[str, str]) -> list[Episode]:
    """Each scenario's time and victim: a random bot (``styles`` may pin a scenario to a style),
    a different one for each; wash trades take an owner with two accounts."""
    rng = sim.rng
    span = sim.days * DAY
    pairs = [(bots[2 * p], bots[2 * p + 1]) for p in range(OWNER_PAIRS)]
    wash = rng.choice(pairs)
    free = [b for b in bots if b not in wash]
    rng.shuffle(free)
    episodes = []
    for name in SCENARIOS:
        if name == "wash_trades":
            chosen: tuple[Bot, ...] = (wash[0], wash[1])
        elif name in styles:
            pinned = [b for b in free if b.style == styles[name]]
            if not pinned:
                raise SystemExit(f"--victim {name}={styles[name]}: no such bot left")
            free.remove(pinned[-1])
            chosen = (pinned[-1],)
        else:
            chosen = (free.pop(),)
        ep = Episode(name, chosen, rng.uniform(0.1, 0.9) * span, random.Random(rng.random()))
        ep.symbol = "MEME-USD" if name == "stolen_key" else chosen[0].symbol
        episodes.append(ep)
        for bot in chosen:
            sim.victims[bot.key.key_id] = ep
    return episodes


async def episode_proc(sim: Sim, ep: Episode) -> Proc:
    """Wait until the victims' keys have a history and their market is open, then attack."""
    while (
        any(sim.engine.activity(b.key.key_id).orders < READY_ORDERS for b in ep.bots)
        or sim.closed_for(ep.symbol)
        or any(sim.closed_for(b.symbol) for b in ep.bots)
    ):
        yield 30.0
    async for delay in BODIES[ep.name](sim, ep):
        yield delay
    ep.ended, ep.done = sim.now, True


# -- the alert receiver -----------------------------------------------------------------------------
class Receiver:
    """The webhook's far end: when each alert's POST arrived (perf_counter)."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[int, str, str], float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        data = await request.json()
        arrived = time.perf_counter()
        index = data.get("ledger_index")
        key = (int(index) if index is not None else -1, str(data["rule"]), str(data["action"]))
        self.arrived[key] = arrived
        self.changed.set()
        return web.Response(status=204)

    async def all_of(self, expected: set[tuple[int, str, str]]) -> None:
        """Until every expected alert has arrived."""
        while not expected <= self.arrived.keys():
            self.changed.clear()
            await self.changed.wait()


# -- running and reporting ----------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    victim: str
    detected: bool
    first: str
    malicious: int
    blocked: int
    how: str
    reached_before: int
    reached: int
    latency_first_ms: float | None
    latency_max_ms: float | None
    halted: bool


def rows(sim: Sim, receiver: Receiver) -> list[Row]:
    out = []
    for ep in sim.episodes:
        mal = [r for r in ep.recs if r.malicious]
        blocked = [r for r in mal if r.outcome in BLOCKED]
        first_block = next((i for i, r in enumerate(mal) if r.outcome in BLOCKED), len(mal))
        flagged = [r for r in ep.recs if r.flagged]
        first = "—"
        if flagged:
            r = flagged[0]
            n = ep.recs.index(r) + 1
            first = f"{'+'.join(r.rules) or 'halt'} → {r.action} (request {n})"
        latencies = [
            (receiver.arrived[k] - r.start) * 1000 for r in ep.recs for k in r.alerts if k in receiver.arrived
        ]
        how = Counter(r.outcome for r in blocked)
        out.append(
            Row(
                ep.name,
                ep.victim,
                # detected: one of the malicious requests themselves was flagged or blocked
                # (a flag on the episode's genuine orders alone does not count)
                any(r.flagged or r.outcome in BLOCKED for r in mal),
                first,
                len(mal),
                len(blocked),
                ", ".join(f"{n} {o}" for o, n in sorted(how.items())),
                sum(1 for r in mal[:first_block] if r.outcome == "allowed"),
                sum(1 for r in mal if r.outcome == "allowed"),
                latencies[0] if latencies else None,
                max(latencies) if latencies else None,
                any(b.key.key_id in sim.halted for b in ep.bots),
            )
        )
    return out


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def fraud_settings(overrides: list[str]) -> FraudSettings:
    """FraudSettings with ``name=value`` overrides (to try a setting change; the default run has none)."""
    raw: dict[str, object] = {}
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            raw[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raw[name.strip()] = value
    try:
        return msgspec.convert(raw, FraudSettings)
    except (msgspec.ValidationError, ConfigError) as exc:
        raise SystemExit(f"--fraud: {exc}") from None


async def simulate(args: argparse.Namespace) -> tuple[Sim, Receiver, float]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/alerts", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    clock = FakeClock(START)
    a = AlertSettings()
    dispatcher = AlertDispatcher(
        clock,
        dedupe_seconds=a.dedupe_seconds,
        max_per_window=a.max_per_window,
        window_seconds=a.window_seconds,
        attempts=a.attempts,
        backoff_seconds=a.backoff_seconds,
    )
    sink = WebhookSink(
        f"http://127.0.0.1:{port}/alerts",
        b"detection-bench-secret",
        TargetPolicy(["127.0.0.1/32"]),
        allow_private=True,
        timeout=a.timeout_seconds,
        clock=clock,
    )
    dispatcher.set_sinks([sink])
    await dispatcher.start()
    sim = Sim(args.seed, args.days, dispatcher, clock, fraud_settings(args.fraud))
    await sim.memory.start(flush_loop=False)
    sim.bots = population(sim, args.bots)
    sim.bot_of = {b.key.key_id: b for b in sim.bots}
    styles = dict(item.partition("=")[::2] for item in args.victim)
    sim.episodes = plan_episodes(sim, sim.bots, styles)
    for bot in sim.bots:
        sim.spawn(bot.run(sim))
        sim.spawn(bot.reads(sim))
    for ep in sim.episodes:
        sim.spawn(episode_proc(sim, ep), ep.at)
    started = time.perf_counter()
    await sim.run(args.days * DAY, args.orders)
    wall = time.perf_counter() - started
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await receiver.all_of(set(sim.expected))
    await dispatcher.close()
    await sim.memory.close()
    await runner.cleanup()
    return sim, receiver, wall


def report(args: argparse.Namespace, sim: Sim, receiver: Receiver, wall: float) -> list[str]:
    legit = sim.legit
    table = rows(sim, receiver)
    command = (
        f".venv/bin/python bench/detection.py --seed {args.seed} --days {args.days:g} --bots {args.bots} "
        f"--orders {args.orders}"
        + "".join(f" --victim {item}" for item in args.victim)
        + "".join(f" --fraud {item}" for item in args.fraud)
        + (" --check" if args.check else "")
    )
    styles = Counter(b.style for b in sim.bots)
    two = sum(1 for b in sim.bots if len(b.hosts) > 1)
    bars = ", ".join(
        f"{s} {BAR_NAMES[s]} bars from #{n} (one per {BAR_SECONDS[s] / 3600:g} h)"
        for s, n in sim.first_bars.items()
    )
    print(f"command: {command}")
    print(
        f"simulated {sim.now / DAY:.2f} days from {START:%Y-%m-%d} in {wall:.1f} s wall; "
        f"{len(sim.bots)} bots "
        f"({styles['periodic']} periodic, {styles['grid']} grid, {styles['maker']} market makers; "
        f"{OWNER_PAIRS} owners with two accounts, {two} bots with two hosts); {bars}"
    )
    print(
        f"legitimate traffic: {legit.orders:,} orders, {legit.cancels:,} cancels, {legit.reads:,} reads; "
        f"{legit.risk_refused} orders refused by the risk stage; {sim.venue.fills:,} fills in all; "
        f"{legit.stopped} bots stopped on finding their key halted"
    )
    print()
    print(
        "| scenario | victim key | detected | first signal | malicious orders | blocked | recall "
        "| reached venue before first block | reached venue in all | alert latency first / max, ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        recall = row.blocked / row.malicious if row.malicious else 0.0
        how = f" ({row.how})" if row.how else ""
        halted = "; key halted" if row.halted else ""
        print(
            f"| {row.scenario} | {row.victim} | {'yes' if row.detected else 'no'} | {row.first}{halted} "
            f"| {row.malicious} | {row.blocked}{how} | {recall:.0%} | {row.reached_before} | {row.reached} "
            f"| {ms(row.latency_first_ms)} / {ms(row.latency_max_ms)} |"
        )
    groups = legit.groups
    clean = groups[GROUPS[0]]
    per_10k = clean.flagged / max(clean.orders, 1) * 10_000
    cpu = sorted(x for values in legit.cpu_ns.values() for x in values)
    all_latency = sorted(
        (receiver.arrived[k] - start) * 1000 for k, start in sim.expected.items() if k in receiver.arrived
    )

    def line(title: str, values: list[str]) -> None:
        print(f"| {title} | " + " | ".join(values) + " |")

    print()
    line("legitimate traffic", ["keys never attacked", "victims' keys during their episode", "... after it"])
    print("|---|---|---|---|")
    line("orders", [f"{g.orders:,}" for g in groups.values()])
    line("requests (orders, cancels, reads)", [f"{g.requests:,}" for g in groups.values()])
    line(
        "flagged requests (alert, hold, deny or halt): false alerts",
        [f"{g.flagged:,}" for g in groups.values()],
    )
    line("... per 10,000 orders", [f"{g.flagged / max(g.orders, 1) * 10_000:,.2f}" for g in groups.values()])
    line(
        "self-trades prevented (orders that would have traded with the owner's own)",
        [f"{g.self_trades:,}" for g in groups.values()],
    )
    line("orders blocked (held, denied, or refused: key halted)", [f"{g.blocked:,}" for g in groups.values()])
    line("keys halted", [f"{g.halts}" for g in groups.values()])
    print()
    print("| measure | value |")
    print("|---|---|")
    if cpu:
        p99 = cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))]
        print(
            f"| fraud stage CPU per legitimate order, µs (mean / p99 of {len(cpu):,}) | "
            f"{statistics.mean(cpu) / 1000:.0f} / {p99 / 1000:.0f} |"
        )
        for style, values in sorted(legit.cpu_ns.items()):
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(
                f"| ... orders of {style} bots ({len(values):,}) | "
                f"{statistics.mean(values) / 1000:.0f} / {p99 / 1000:.0f} |"
            )
    if all_latency:
        print(
            f"| alert latency, all {len(all_latency):,} alerts delivered, ms (p50 / max) | "
            f"{statistics.median(all_latency):.1f} / {all_latency[-1]:.1f} |"
        )
    print(f"| holds waiting for an operator at the end | {len(sim.store.held):,} |")
    stats = sim.dispatcher.stats()
    print(
        f"| alerts submitted / suppressed (duplicate, rate) / dropped / delivered | {stats['submitted']:,} / "
        f"{stats['suppressed_duplicate']:,}, {stats['suppressed_rate']:,} / {stats['dropped']:,} / "
        f"{stats['delivered']:,} |"
    )
    causes = Counter[str]()
    for g in groups.values():
        causes.update(g.causes)
    if causes:
        print()
        line("false alerts by rules → action", list(GROUPS))
        print("|---|---|---|---|")
        for cause, _ in causes.most_common():
            line(cause, [f"{g.causes[cause]:,}" for g in groups.values()])
        print()
        print("| false alerts on keys never attacked: bot | rules → action | count |")
        print("|---|---|---|")
        for bot, count in clean.bots.most_common():
            print(f"| {bot} | {count:,} |")
        for name in (GROUPS[0], GROUPS[2]):
            if groups[name].examples:
                print()
                print(f"the first false alert of each kind ({name}):")
                for example in groups[name].examples.values():
                    print(f"- {example}")

    failed = []
    for row in table:
        if not row.detected:
            failed.append(f"{row.scenario} not detected")
        if row.reached > 2:
            failed.append(f"{row.scenario}: {row.reached} malicious orders reached the venue")
        if row.detected and row.latency_max_ms is None:
            failed.append(f"{row.scenario}: no alert delivered")
        elif row.latency_max_ms is not None and row.latency_max_ms > 1000:
            failed.append(f"{row.scenario}: alert latency {row.latency_max_ms:.0f} ms")
    if per_10k > 1:
        failed.append(f"{per_10k:.2f} false alerts per 10,000 legitimate orders (keys never attacked)")
    if legit.orders < 10_000:
        failed.append(f"only {legit.orders} legitimate orders")
    summary = {
        "command": command,
        "simulated_days": sim.now / DAY,
        "wall_seconds": wall,
        "legit_orders": legit.orders,
        "groups": {
            name: {k: v for k, v in g.__dict__.items() if k != "examples"} for name, g in groups.items()
        },
        "false_alerts_per_10k": per_10k,
        "stage_cpu_us_mean": statistics.mean(cpu) / 1000 if cpu else None,
        "scenarios": [row.__dict__ for row in table],
        "failed": failed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print()
    print("targets: " + ("all met" if not failed else "MISSED: " + "; ".join(failed)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--days", type=float, default=2.0, help="simulated days (longer if --orders needs it)"
    )
    parser.add_argument("--bots", type=int, default=30)
    parser.add_argument("--orders", type=int, default=10_000, help="at least this many legitimate orders")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--victim",
        action="append",
        default=[],
        metavar="SCENARIO=STYLE",
        help="make a scenario's victim a bot of this style (periodic, grid, maker); repeatable",
    )
    parser.add_argument(
        "--fraud",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a FraudSettings field (repeatable), to try a setting change",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "detection.json")
    args = parser.parse_args()
    for item in args.victim:
        scenario, _, style = item.partition("=")
        if scenario not in SCENARIOS or scenario == "wash_trades" or style not in STYLES:
            parser.error(f"--victim {item}: expected SCENARIO=STYLE, a scenario but wash_trades, a bot style")
    if args.bots < 2 * OWNER_PAIRS + len(SCENARIOS):
        parser.error(f"--bots must be at least {2 * OWNER_PAIRS + len(SCENARIOS)}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    sim, receiver, wall = asyncio.run(simulate(args))
    failed = report(args, sim, receiver, wall)
    if args.check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
