"""The risk stage with the forward stage behind it, on the paper venue (X-USD at 100, depth 5)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from bastion.domain.policy import document_from
from bastion.domain.principals import Principal, Scope
from bastion.domain.trading import Level, TradingState
from bastion.domain.verdict import ALLOW, Allow, Deny, Verdict
from bastion.errors import ErrorCode, VenueError
from bastion.pipeline.chain import Pipeline
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import Firewall
from bastion.pipeline.risk import RiskCheck
from bastion.risk.book import ExposureBook
from bastion.risk.engine import RiskEngine
from bastion.state.policies import PolicyCache, key_subject
from bastion.state.trading import TradingStates
from tests.pipeline.test_forward import Rig
from tests.support import Req, context, order_body

KEY = "bst_k"


class SignedBy:
    """Stands in for authn: the request comes from KEY of ``account``."""

    name: ClassVar[str] = "authn"

    def __init__(self, account: str) -> None:
        self.principal = Principal(KEY, account, frozenset(Scope))

    async def __call__(self, ctx: RequestContext) -> Verdict:
        ctx.principal = self.principal
        return ALLOW


class RiskRig:
    def __init__(self, **limits: Any) -> None:
        self.base = Rig()
        self.book = ExposureBook()
        paper = self.base.venue.inner
        self.engine = RiskEngine(self.book, paper)
        paper.subscribe(
            lambda account, order: self.book.on_venue_order(account, order, self.base.clock.now(), "USD")
        )
        self.policies = PolicyCache({key_subject(KEY): (1, document_from(limits))})
        self.states = TradingStates()
        self.risk = RiskCheck(self.engine, self.policies, self.states, self.base.orders, self.base.clock)

    async def setup(self) -> RiskRig:
        await self.base.setup()
        return self

    async def send(
        self, body: dict[str, Any], route: str = "place_order", **kw: Any
    ) -> tuple[Verdict, RequestContext]:
        stages = (Firewall(), SignedBy("alice"), self.risk, self.base.forward)
        ctx = context(Req(route, body, **kw), self.base.clock)
        if "id" in kw.get("path_params", {}):
            ctx.order = await self.base.orders.get(kw["path_params"]["id"])
        verdict = await Pipeline(stages, self.base.ledger).run(ctx)
        return verdict, ctx


def reason(verdict: Verdict) -> str | None:
    assert isinstance(verdict, Deny), verdict
    return verdict.public_reason


async def test_many_simultaneous_orders_near_a_limit_never_exceed_it() -> None:
    rig = await RiskRig(max_open_orders=5).setup()
    rig.base.venue.delay = 0.005  # every order waits at the venue, so they overlap
    results = await asyncio.gather(
        *(rig.send(order_body(f"c{i}", price="90", time_in_force="gtc")) for i in range(30))
    )
    placed = [ctx for verdict, ctx in results if isinstance(verdict, Allow)]
    refused = [reason(verdict) for verdict, _ in results if not isinstance(verdict, Allow)]
    assert len(placed) == 5 and refused == ["MAX_OPEN_ORDERS"] * 25
    assert rig.base.venue.calls == 5
    assert len(await rig.base.venue.inner.open_orders("alice", None)) == 5


async def test_simultaneous_market_orders_never_exceed_the_daily_notional() -> None:
    rig = await RiskRig(max_daily_notional="1000").setup()
    rig.base.venue.delay = 0.005
    results = await asyncio.gather(
        *(rig.send(order_body(f"m{i}", type="market", price=None)) for i in range(20))
    )
    filled = [ctx.result for verdict, ctx in results if isinstance(verdict, Allow)]
    notional = sum(f.quantity * f.price for r in filled for f in r.snapshot.fills)  # type: ignore[union-attr]
    assert len(filled) == 9 and notional <= 1000  # 9 x 100.01; a tenth would pass 1000


async def test_a_retry_of_a_placed_order_is_answered_not_refused() -> None:
    rig = await RiskRig(max_open_orders=1).setup()
    first, ctx = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    assert isinstance(first, Allow) and ctx.status == 201
    again, ctx2 = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    assert isinstance(again, Allow) and ctx2.status == 200 and ctx2.result.id == ctx.result.id  # type: ignore[union-attr]
    assert reason((await rig.send(order_body("c2", price="90", time_in_force="gtc")))[0]) == "MAX_OPEN_ORDERS"
    changed, _ = await rig.send(order_body("c1", price="91", time_in_force="gtc"))
    assert isinstance(changed, Deny) and changed.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert rig.base.venue.calls == 1


async def test_a_venue_refusal_releases_the_reservation() -> None:
    rig = await RiskRig(max_open_orders=1).setup()
    refused, _ = await rig.send(order_body("big", quantity="5000", price="90", time_in_force="gtc"))
    assert isinstance(refused, Deny) and refused.public_reason == "INSUFFICIENT_BALANCE"
    ok, _ = await rig.send(order_body("small", price="90", time_in_force="gtc"))
    assert isinstance(ok, Allow)


async def test_an_unanswered_order_keeps_its_reservation_until_its_retry() -> None:
    rig = await RiskRig(max_open_orders=1).setup()
    rig.base.venue.fail_with = VenueError("connection reset")
    lost, _ = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    assert isinstance(lost, Deny) and lost.code is ErrorCode.VENUE_UNAVAILABLE
    rig.base.venue.fail_with = None
    assert reason((await rig.send(order_body("c2", price="90", time_in_force="gtc")))[0]) == "MAX_OPEN_ORDERS"
    retried, ctx = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    assert isinstance(retried, Allow) and ctx.result.status == "new"  # type: ignore[union-attr]
    assert rig.book.flow(KEY, rig.base.clock.now().toordinal()).open_orders == 1


async def test_fills_and_cancels_free_capacity() -> None:
    rig = await RiskRig(max_open_orders=1).setup()
    verdict, ctx = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    assert isinstance(verdict, Allow)
    order_id = ctx.result.id  # type: ignore[union-attr]
    assert reason((await rig.send(order_body("c2", price="90", time_in_force="gtc")))[0]) == "MAX_OPEN_ORDERS"
    canceled, _ = await rig.send(None, "cancel_order", path_params={"id": order_id})
    assert isinstance(canceled, Allow)
    verdict, _ = await rig.send(order_body("c3", type="market", price=None))  # fills at once, then closes
    assert isinstance(verdict, Allow)
    assert isinstance((await rig.send(order_body("c4", price="90", time_in_force="gtc")))[0], Allow)


async def test_halted_refuses_orders_but_never_cancels() -> None:
    rig = await RiskRig().setup()
    _, ctx = await rig.send(order_body("c1", price="90", time_in_force="gtc"))
    rig.states.set(Level.ACCOUNT, "alice", TradingState.HALTED)
    assert reason((await rig.send(order_body("c2", price="90")))[0]) == "TRADING_HALTED"
    # a retry of an already placed order is refused too while halted: nothing reaches the venue
    assert reason((await rig.send(order_body("c1", price="90", time_in_force="gtc")))[0]) == "TRADING_HALTED"
    canceled, _ = await rig.send(None, "cancel_order", path_params={"id": ctx.result.id})  # type: ignore[union-attr]
    assert isinstance(canceled, Allow)
    rig.states.set(Level.ACCOUNT, "alice", TradingState.ACTIVE)
    assert isinstance((await rig.send(order_body("c3", price="90")))[0], Allow)


async def test_refusals_reach_the_ledger_with_stage_and_reason() -> None:
    rig = await RiskRig(max_order_quantity="1").setup()
    verdict, _ = await rig.send(order_body("c1", quantity="2"))
    assert isinstance(verdict, Deny) and (verdict.code, verdict.public_reason) == (
        ErrorCode.RISK_REJECTED,
        "MAX_ORDER_QUANTITY",
    )
    kind, entry = rig.base.ledger.entries[-1]
    assert kind == "request" and entry["stage"] == "risk" and entry["code"] == "RISK_REJECTED"
    assert "quantity 2 > 1" in str(entry["reason"]) and entry["outcome"] == {"policy_versions": [0, 1]}
    assert rig.base.venue.calls == 0


@pytest.mark.parametrize("route", ["get_account", "list_markets", "list_orders"])
async def test_reads_pass_whatever_the_state(route: str) -> None:
    rig = await RiskRig().setup()
    rig.states.set(Level.GLOBAL, "", TradingState.HALTED)
    ctx = context(Req(route), rig.base.clock)
    ctx.principal = Principal(KEY, "alice", frozenset(Scope))
    assert isinstance(await rig.risk(ctx), Allow)
