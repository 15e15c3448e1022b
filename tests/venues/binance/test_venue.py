"""The Binance adapter against a local venue speaking the protocol over TLS (fake_venue.py),
through the real transport: what it does with good answers, and with every hostile one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bastion.alerts.ssrf import TargetPolicy
from bastion.clock import SystemClock
from bastion.config import VenueSettings
from bastion.domain.orders import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, VenueOrder
from bastion.errors import VenueError, VenueRejected
from bastion.tls import create_self_signed
from bastion.venues.binance.venue import BinanceVenue, VenueKey
from bastion.venues.binance.wire import AnswerInvalid
from bastion.venues.http import AiohttpTransport, transport_for
from tests.venues.binance.fake_venue import FakeBinance

API_KEY = "vk-test-3f1c9a"  # pragma: allowlist secret
SECRET = "vs-test-5d2e7b0c9a81f4e6"  # pragma: allowlist secret
WRONG_SECRET = "vs-not-the-secret"  # pragma: allowlist secret


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeBinance]:
    directory = tmp_path_factory.mktemp("fake-binance")
    create_self_signed(directory / "cert.pem", directory / "key.pem", SystemClock().now())
    venue = FakeBinance(directory / "cert.pem", directory / "key.pem", API_KEY, SECRET)
    venue.start()
    yield venue
    venue.stop()


def settings(fake: FakeBinance, **overrides: object) -> VenueSettings:
    values: dict[str, object] = {
        "kind": "binance",
        "base_url": fake.url,
        "ca_file": str(fake.cert),
        "symbols": ["BTCUSDT"],
        "allow_private_network": True,
        "allowed_networks": ["127.0.0.1/32"],
        "timeout_seconds": 1.0,
        "max_response_bytes": 65_536,
        "breaker_failures": 1000,
    }
    values.update(overrides)
    return VenueSettings(**values)  # type: ignore[arg-type]


def build(fake: FakeBinance, **overrides: object) -> BinanceVenue:
    chosen = settings(fake, **overrides)
    transport = transport_for(chosen)

    async def keys(account: str) -> VenueKey | None:
        return VenueKey(API_KEY, SECRET.encode()) if account == "alice" else None

    return BinanceVenue(chosen, transport, keys, SystemClock())


@pytest.fixture
async def venue(fake: FakeBinance) -> AsyncIterator[BinanceVenue]:
    fake.hostile.clear()
    adapter = build(fake)
    await adapter.serve()
    yield adapter
    await adapter.close()


_ids = iter(range(10**9))


def order(
    kind: str = "market", *, side: Side = Side.BUY, price: str | None = None, quantity: str = "0.001"
) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"t-{time.monotonic_ns() % 10**12}-{next(_ids)}",
        symbol="BTC-USDT",
        side=side,
        type=OrderType(kind),
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=TimeInForce.IOC if kind == "market" else TimeInForce.GTC,
    )


async def test_instruments_and_quotes_come_from_the_venue(venue: BinanceVenue) -> None:
    instrument = venue.instrument("BTC-USDT")
    assert instrument is not None
    assert (instrument.base, instrument.quote) == ("BTC", "USDT")
    assert (instrument.tick_size, instrument.lot_size, instrument.min_notional) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("5"),
    )
    quote = venue.quote("BTC-USDT")
    assert quote is not None and (quote.bid, quote.ask, quote.last) == (
        Decimal("50000.00"),
        Decimal("50000.10"),
        Decimal("50000.05"),
    )
    assert venue.liquidity("BTC-USDT") == Decimal("1500000000.00")
    assert venue.instrument("ETH-USDT") is None and venue.quote("ETH-USDT") is None


async def test_a_market_order_fills_and_is_reported(venue: BinanceVenue) -> None:
    seen: list[tuple[str, VenueOrder]] = []
    venue.subscribe(lambda account, report: seen.append((account, report)))
    request = order()
    placed = await venue.place("alice", request)
    assert placed.status is OrderStatus.FILLED
    assert (placed.filled_quantity, placed.average_price) == (Decimal("0.001"), Decimal("50000.1"))
    assert placed.client_order_id == request.client_order_id and placed.venue_order_id.startswith("BTCUSDT:")
    assert seen == [("alice", placed)]


async def test_a_resting_order_is_looked_up_filled_and_a_cancel_of_it_is_refused(
    venue: BinanceVenue, fake: FakeBinance
) -> None:
    placed = await venue.place("alice", order("limit", price="49000.00"))
    assert placed.status is OrderStatus.NEW and placed.filled_quantity == 0
    fake.fill_resting(int(placed.venue_order_id.split(":")[1]))
    found = await venue.order("alice", placed.venue_order_id)
    assert found is not None and found.status is OrderStatus.FILLED
    assert found.average_price == Decimal("49000")
    with pytest.raises(VenueRejected) as refused:
        await venue.cancel("alice", placed.venue_order_id)
    assert refused.value.reason == "ORDER_NOT_OPEN"
    assert await venue.order("alice", "BTCUSDT:999999999") is None


async def test_cancel_and_open_orders(venue: BinanceVenue) -> None:
    placed = await venue.place("alice", order("limit", price="48000.00"))
    assert placed.venue_order_id in {o.venue_order_id for o in await venue.open_orders("alice", "BTC-USDT")}
    canceled = await venue.cancel("alice", placed.venue_order_id)
    assert canceled.status is OrderStatus.CANCELED
    assert canceled.client_order_id == placed.client_order_id  # not the cancel's own id
    assert placed.venue_order_id not in {o.venue_order_id for o in await venue.open_orders("alice", None)}


async def test_a_retry_after_a_lost_answer_returns_the_order_the_venue_holds(
    venue: BinanceVenue, fake: FakeBinance
) -> None:
    request = order("limit", price="47000.00")
    fake.hostile["place"] = "malformed"  # the venue takes the order; its answer is lost
    with pytest.raises(AnswerInvalid):
        await venue.place("alice", request)
    fake.hostile.clear()
    retried = await venue.place("alice", request)  # "Duplicate order sent." → looked up
    assert retried.client_order_id == request.client_order_id and retried.status is OrderStatus.NEW
    assert sum(o.client_order_id == request.client_order_id for o in fake.orders.values()) == 1


async def test_an_account_without_a_credential_is_refused_before_any_call(
    venue: BinanceVenue, fake: FakeBinance
) -> None:
    before = fake.count("place")
    with pytest.raises(VenueRejected) as refused:
        await venue.place("bob", order())
    assert refused.value.reason == "NO_VENUE_CREDENTIAL" and fake.count("place") == before


async def test_balances_and_the_credential_audit(venue: BinanceVenue, fake: FakeBinance) -> None:
    balances = {b.asset: b.free for b in await venue.balances("alice")}
    assert balances["USDT"] > 0 and "BTC" in balances
    permissions = await venue.audit_credentials({"api_key": API_KEY, "api_secret": SECRET})
    assert permissions.can_trade and not permissions.can_withdraw and permissions.ip_restricted
    with pytest.raises(VenueRejected) as refused:  # a wrong secret: the venue refuses the signature
        await venue.audit_credentials({"api_key": API_KEY, "api_secret": WRONG_SECRET})
    assert refused.value.reason == "VENUE_CREDENTIAL_REFUSED"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("malformed", "VENUE_ANSWER_MALFORMED"),
        ("not_json", "VENUE_ANSWER_NOT_JSON"),
        ("oversized", "VENUE_ANSWER_TOO_LARGE"),
        ("gzip_bomb", "VENUE_ANSWER_ENCODED"),
        ("redirect", "VENUE_REDIRECTED"),
        ("server_error", "VENUE_SERVER_ERROR"),
        ("mismatch", "VENUE_ANSWER_MISMATCH"),
        ("overfill", "VENUE_OVERFILLED"),
        ("worse_fill", "VENUE_FILL_OUTSIDE_LIMIT"),
        ("huge_number", "VENUE_ANSWER_MALFORMED"),
        ("deep_nesting", "VENUE_ANSWER_MALFORMED"),
        ("rate_limited", "VENUE_RATE_LIMITED"),
        ("slow", "VENUE_TIMEOUT"),
    ],
)
async def test_a_hostile_answer_to_an_order_fails_closed_with_a_reason_of_our_own(
    venue: BinanceVenue, fake: FakeBinance, mode: str, reason: str
) -> None:
    seen: list[VenueOrder] = []
    venue.subscribe(lambda account, report: seen.append(report))
    fake.hostile["place"] = mode
    started = time.monotonic()
    with pytest.raises(VenueError) as failed:
        await venue.place("alice", order("limit", price="49990.00"))
    assert not isinstance(failed.value, VenueRejected)  # not "refused": the venue may hold it
    assert str(failed.value) == reason
    assert time.monotonic() - started < 5  # bounded by the 1 s transport timeout
    assert seen == []  # nothing believed, nothing reported to the risk book


async def test_a_venue_error_text_never_travels_on(venue: BinanceVenue, fake: FakeBinance) -> None:
    fake.hostile["place"] = "echo_secret"
    with pytest.raises(VenueRejected) as refused:
        await venue.place("alice", order())
    text = f"{refused.value} {refused.value.reason} {refused.value.detail}"
    assert refused.value.reason == "VENUE_REJECTED"
    assert SECRET not in text and API_KEY not in text and "<script>" not in text


async def test_a_crossed_book_is_not_a_quote_and_an_old_quote_is_none(fake: FakeBinance) -> None:
    fake.hostile.clear()
    adapter = build(fake, poll_seconds=0.1, quote_max_age_seconds=0.3)
    try:
        fake.hostile["ticker"] = "crossed"
        await adapter.poll_once()  # instruments load; the crossed ticker is refused
        assert adapter.instrument("BTC-USDT") is not None and adapter.quote("BTC-USDT") is None
        fake.hostile.clear()
        await adapter.poll_once()
        assert adapter.quote("BTC-USDT") is not None
        await asyncio.sleep(0.4)  # no poll loop runs here: the quote ages out
        assert adapter.quote("BTC-USDT") is None
    finally:
        await adapter.close()


async def test_a_price_jump_waits_for_the_next_poll_to_confirm_it(fake: FakeBinance) -> None:
    fake.hostile.clear()
    adapter = build(fake)
    try:
        await adapter.poll_once()
        fake.hostile["ticker"] = "jump"
        await adapter.poll_once()
        quote = adapter.quote("BTC-USDT")
        assert quote is not None and quote.last == Decimal("50000.05")  # held back
        await adapter.poll_once()  # confirmed by a second answer
        quote = adapter.quote("BTC-USDT")
        assert quote is not None and quote.last == Decimal("500000.50")
    finally:
        fake.hostile.clear()
        await adapter.close()


async def test_the_breaker_stops_calling_a_failing_venue(fake: FakeBinance) -> None:
    fake.hostile.clear()
    adapter = build(fake, breaker_failures=3, breaker_cooldown_seconds=60)
    try:
        await adapter.poll_once()
        fake.hostile["place"] = "server_error"
        for _ in range(3):
            with pytest.raises(VenueError):
                await adapter.place("alice", order())
        before = fake.count("place")
        with pytest.raises(VenueError) as failed:
            await adapter.place("alice", order())
        assert str(failed.value) == "CIRCUIT_OPEN" and fake.count("place") == before
    finally:
        fake.hostile.clear()
        await adapter.close()


def test_a_venue_url_must_be_https_and_never_a_metadata_address(fake: FakeBinance, tmp_path: Path) -> None:
    from bastion.errors import ConfigError, TargetRefused

    policy = TargetPolicy(["127.0.0.1/32"])
    with pytest.raises(ConfigError):
        AiohttpTransport(
            "http://127.0.0.1:1", timeout=1, max_response_bytes=4096, policy=policy, allow_private=True
        )
    with pytest.raises(TargetRefused):
        AiohttpTransport(
            "https://169.254.169.254", timeout=1, max_response_bytes=4096, policy=policy, allow_private=True
        )
    with pytest.raises(TargetRefused):  # loopback without the operator's allowance
        AiohttpTransport(
            "https://127.0.0.1:1", timeout=1, max_response_bytes=4096, policy=policy, allow_private=False
        )
    with pytest.raises(ConfigError):
        AiohttpTransport(
            f"{fake.url}/api?x=1", timeout=1, max_response_bytes=4096, policy=policy, allow_private=True
        )


async def test_after_an_outage_a_jump_still_waits_for_confirmation(fake: FakeBinance) -> None:
    fake.hostile.clear()
    adapter = build(fake, poll_seconds=0.1, quote_max_age_seconds=0.3)
    try:
        await adapter.poll_once()
        await asyncio.sleep(0.4)  # the quote ages out: no quote, orders refused
        assert adapter.quote("BTC-USDT") is None
        fake.hostile["ticker"] = "jump"
        await adapter.poll_once()
        assert adapter.quote("BTC-USDT") is None  # the stale one is not revived, the jump is held
        await adapter.poll_once()
        quote = adapter.quote("BTC-USDT")
        assert quote is not None and quote.last == Decimal("500000.50")
    finally:
        fake.hostile.clear()
        await adapter.close()
