"""The forward stage against the paper venue and in-memory stores."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import pytest

from bastion.clock import FakeClock
from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import Balance, OrderRequest, Ticker, VenueOrder
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ErrorCode, VenueError
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import Firewall
from bastion.pipeline.forward import Forward
from bastion.ports import OrderState
from bastion.store.memory import MemoryLedger, MemoryOrderStore
from bastion.venues.paper.data import Bar
from bastion.venues.paper.engine import Market, PaperEngine
from bastion.venues.paper.store import MemoryPaperStore
from bastion.venues.paper.venue import PaperVenue
from tests.support import Req, context, order_body

D = Decimal


class CountingVenue:
    """Wraps the paper venue, counting place calls; can be told to fail."""

    name = "paper"

    def __init__(self, inner: PaperVenue) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_with: Exception | None = None
        self.delay = 0.0

    async def instruments(self) -> Sequence[Instrument]:
        return await self.inner.instruments()

    async def ticker(self, symbol: str) -> Ticker | None:
        return await self.inner.ticker(symbol)

    async def place(self, account: str, request: OrderRequest) -> VenueOrder:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        self.calls += 1  # calls that reached the venue, accepted or rejected
        return await self.inner.place(account, request)

    async def cancel(self, account: str, venue_order_id: str) -> VenueOrder:
        return await self.inner.cancel(account, venue_order_id)

    async def order(self, account: str, venue_order_id: str) -> VenueOrder | None:
        return await self.inner.order(account, venue_order_id)

    async def open_orders(self, account: str, symbol: str | None) -> Sequence[VenueOrder]:
        return await self.inner.open_orders(account, symbol)

    async def balances(self, account: str) -> Sequence[Balance]:
        return await self.inner.balances(account)


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        instrument = Instrument("X-USD", "X", "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))
        bars = [Bar(D(100), D(100), D(100), D(100))]
        engine = PaperEngine(
            {"X-USD": Market(instrument, bars, D(5), D(0))},
            bar_seconds=60,
            epoch_us=0,
            funding={"USD": D(100_000), "X": D(100)},
        )
        self.venue = CountingVenue(PaperVenue(engine, MemoryPaperStore(), self.clock))
        self.ledger = MemoryLedger()
        self.orders = MemoryOrderStore(self.ledger)
        self.forward = Forward(self.orders, self.venue, self.ledger, self.clock, venue_timeout=1.0)

    async def setup(self) -> Rig:
        await self.venue.inner.create_account("alice")
        await self.venue.inner.create_account("bob")
        return self

    async def send(self, req: Req, account: str = "alice") -> tuple[Allow | Deny, RequestContext]:
        ctx = context(req, self.clock)
        assert isinstance(await Firewall()(ctx), Allow)
        ctx.principal = Principal("bst_k", account, frozenset(Scope))
        if "id" in req.path_params:
            ctx.order = await self.orders.get(req.path_params["id"])
        verdict = await self.forward(ctx)
        await asyncio.gather(*ctx.pending)  # as the pipeline's log phase does
        assert isinstance(verdict, Allow | Deny)
        return verdict, ctx


@pytest.fixture
async def rig() -> Rig:
    return await Rig().setup()


async def test_new_order_is_201_and_a_retry_is_200_with_the_same_order(rig: Rig) -> None:
    verdict, first = await rig.send(Req("place_order", order_body("c1", type="market", price=None)))
    assert isinstance(verdict, Allow) and first.status == 201
    verdict, again = await rig.send(Req("place_order", order_body("c1", type="market", price=None)))
    assert isinstance(verdict, Allow) and again.status == 200
    assert again.result.id == first.result.id  # type: ignore[union-attr]
    assert rig.venue.calls == 1
    assert rig.ledger.kinds() == ["order.submit", "order.accepted"]


async def test_same_id_other_parameters_is_409_and_trades_nothing(rig: Rig) -> None:
    await rig.send(Req("place_order", order_body("c1")))
    verdict, _ = await rig.send(Req("place_order", order_body("c1", quantity="2")))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert rig.venue.calls == 1


async def test_client_order_ids_are_per_account(rig: Rig) -> None:
    _, a = await rig.send(Req("place_order", order_body("same")), account="alice")
    _, b = await rig.send(Req("place_order", order_body("same")), account="bob")
    assert a.result.id != b.result.id  # type: ignore[union-attr]
    assert rig.venue.calls == 2


async def test_twenty_concurrent_identical_submissions_place_one_order(rig: Rig) -> None:
    rig.venue.delay = 0.01
    results = await asyncio.gather(*(rig.send(Req("place_order", order_body("burst"))) for _ in range(20)))
    assert all(isinstance(v, Allow) for v, _ in results)
    assert len({ctx.result.id for _, ctx in results}) == 1  # type: ignore[union-attr]
    assert sorted(ctx.status for _, ctx in results) == [200] * 19 + [201]
    assert rig.venue.calls == 1


async def test_venue_rejection_is_422_with_reason_and_replays_identically(rig: Rig) -> None:
    body = order_body("big", quantity="100000")
    verdict, _ = await rig.send(Req("place_order", body))
    assert isinstance(verdict, Deny)
    assert (verdict.code, verdict.public_reason) == (ErrorCode.ORDER_REJECTED, "INSUFFICIENT_BALANCE")
    verdict, _ = await rig.send(Req("place_order", body))
    assert isinstance(verdict, Deny) and verdict.public_reason == "INSUFFICIENT_BALANCE"
    assert rig.venue.calls == 1  # the first attempt only: the replay did not reach the venue
    assert rig.ledger.kinds() == ["order.submit", "order.rejected"]


async def test_venue_outage_fails_closed_and_the_retry_places_once(rig: Rig) -> None:
    rig.venue.fail_with = VenueError("connection refused")
    verdict, ctx = await rig.send(Req("place_order", order_body("c9")))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.VENUE_UNAVAILABLE
    record = await rig.orders.find("alice", "c9")
    assert record is not None and record.state is OrderState.PENDING
    rig.venue.fail_with = None
    verdict, ctx = await rig.send(Req("place_order", order_body("c9")))
    assert isinstance(verdict, Allow) and ctx.status == 200
    assert rig.venue.calls == 1


async def test_a_slow_venue_times_out_closed(rig: Rig) -> None:
    rig.venue.delay = 2.0
    verdict, _ = await rig.send(Req("place_order", order_body("slow")))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.VENUE_UNAVAILABLE


async def test_cancel_then_cancel_again(rig: Rig) -> None:
    _, placed = await rig.send(Req("place_order", order_body("rest", price="50")))
    order_id = placed.result.id  # type: ignore[union-attr]
    verdict, ctx = await rig.send(Req("cancel_order", path_params={"id": order_id}))
    assert isinstance(verdict, Allow) and ctx.result.status == "canceled"  # type: ignore[union-attr]
    verdict, _ = await rig.send(Req("cancel_order", path_params={"id": order_id}))
    assert isinstance(verdict, Deny) and verdict.public_reason == "ORDER_NOT_OPEN"


async def test_list_filters_open_and_closed(rig: Rig) -> None:
    await rig.send(Req("place_order", order_body("open1", price="50")))
    await rig.send(Req("place_order", order_body("done1", type="market", price=None)))
    _, open_ctx = await rig.send(Req("list_orders", query="status=open"))
    _, closed_ctx = await rig.send(Req("list_orders", query="status=closed"))
    _, all_ctx = await rig.send(Req("list_orders"))
    assert [r.request.client_order_id for r in open_ctx.result] == ["open1"]  # type: ignore[union-attr]
    assert [r.request.client_order_id for r in closed_ctx.result] == ["done1"]  # type: ignore[union-attr]
    assert len(all_ctx.result) == 2  # type: ignore[arg-type]


async def test_unknown_ticker_is_404(rig: Rig) -> None:
    verdict, _ = await rig.send(Req("get_ticker", path_params={"symbol": "NOPE"}))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.NOT_FOUND


def test_order_ids_are_well_formed_and_unique() -> None:
    import re

    from bastion.pipeline.forward import new_order_id
    from bastion.schema import ORDER_ID_PATTERN

    ids = {new_order_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(re.fullmatch(ORDER_ID_PATTERN, i) for i in ids)
