"""The fraud stage on its own: a fake market, the in-memory fraud store, a fake clock.

The stage's verdict is followed by what the pipeline's log phase does (``finish``): the
finalizers see the request's final verdict, then the recorded callbacks get its ledger index.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pytest

from bastion.alerts.alert import Alert, Severity
from bastion.clock import FakeClock
from bastion.config import FraudSettings
from bastion.domain.instruments import AssetClass, Instrument
from bastion.domain.orders import OrderRequest, OrderStatus, Ticker, VenueOrder
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import ALLOW, Allow, Deny, Hold, Verdict
from bastion.errors import ErrorCode, VenueError
from bastion.fraud.engine import Action, Assessment, FraudEngine
from bastion.pipeline.chain import Pipeline
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import Firewall
from bastion.pipeline.fraud import HALT_QUIET_SECONDS, FraudCheck
from bastion.ports import HoldStatus, KeyRecord, OrderRecord
from bastion.state.fraud import FraudMemory
from bastion.store.memory import MemoryFraudStore
from tests.pipeline.test_forward import Rig as ForwardRig
from tests.support import Req, context, order_body

D = Decimal
S = FraudSettings()
HOME = "10.0.0.1"  # where alice's key is normally used
AWAY = "192.0.2.1"  # a network it never used
ORDER_ID = "ord_" + "A" * 24
OWNERS = {"alice": "olga", "bob": "olga"}  # carol is her own owner


class Market:
    """X-USD is deep (its venue states no liquidity), THIN-USD is thin; both quote 99.99 / 100.01."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.depth: dict[str, Decimal | None] = {"X-USD": None, "THIN-USD": D(5_000)}
        self.asks: dict[str, Decimal] = {}  # a symbol's ask, when it is not 100.01

    def instrument(self, symbol: str) -> Instrument | None:
        if symbol not in self.depth:
            return None
        base = symbol.split("-")[0]
        return Instrument(symbol, base, "USD", AssetClass.CRYPTO, D("0.01"), D("0.1"), D("1"))

    def quote(self, symbol: str) -> Ticker | None:
        if symbol not in self.depth:
            return None
        return Ticker(symbol, D("99.99"), self.asks.get(symbol, D("100.01")), D("100"), self._clock.now())

    def liquidity(self, symbol: str) -> Decimal | None:
        return self.depth.get(symbol)


class Rig:
    def __init__(self, owners: dict[str, str] | None = None, **settings: Any) -> None:
        self.clock = FakeClock()
        self.created = self.clock.now()  # when every key of the rig was created
        self.store = MemoryFraudStore(owners)
        self.memory = FraudMemory(self.store)
        self.engine = FraudEngine(FraudSettings(**settings))
        self.alerts: list[Alert] = []
        self.halts: list[tuple[str, str]] = []
        self.decisions: list[Assessment] = []
        self.market = Market(self.clock)
        self.stage = FraudCheck(
            self.engine,
            self.memory,
            self.market,
            self.clock,
            alert=self._alert,
            halt=lambda key_id, reason: self.halts.append((key_id, reason)),
            on_decision=self.decisions.append,
        )

    def _alert(self, alert: Alert) -> bool:
        self.alerts.append(alert)
        return True

    async def ctx(
        self,
        body: dict[str, Any] | None = None,
        *,
        route: str = "place_order",
        account: str = "alice",
        ip: str = HOME,
        fresh: bool = False,
    ) -> RequestContext:
        params = {"id": ORDER_ID} if route == "cancel_order" else {}
        ctx = context(Req(route, body, path_params=params), self.clock)
        assert isinstance(await Firewall()(ctx), Allow)  # decodes the order
        ctx.client_ip = ip
        key_id = "k_" + account
        ctx.principal = Principal(key_id, account, frozenset(Scope))
        if fresh:  # the key's record, created minutes ago (the authn stage sets it)
            ctx.key = KeyRecord(key_id, account, "ed25519", b"", frozenset(Scope), self.created, None, None)
        return ctx

    async def send(self, body: dict[str, Any] | None = None, **kw: Any) -> tuple[Verdict, RequestContext]:
        ctx = await self.ctx(body, **kw)
        return await self.stage(ctx), ctx

    async def place(
        self, body: dict[str, Any] | None = None, *, final: Verdict | None = None, index: int = 7, **kw: Any
    ) -> tuple[Verdict, RequestContext]:
        """Send, then finish the request (``final``: the verdict of the stages after this one)."""
        verdict, ctx = await self.send(body, **kw)
        finish(ctx, final if final is not None else verdict, index)
        return verdict, ctx


def finish(ctx: RequestContext, verdict: Verdict, index: int = 7) -> None:
    for finalize in ctx.finalizers:
        finalize(verdict)
    for recorded in ctx.recorded:
        recorded(index)


def fraud(ctx: RequestContext) -> dict[str, Any]:
    found = ctx.outcome["fraud"]
    assert isinstance(found, dict)
    return found


def rules_of(ctx: RequestContext) -> list[str]:
    return [r["rule"] for r in fraud(ctx).get("rules", [])]


def denied(verdict: Verdict, code: ErrorCode) -> Deny:
    assert isinstance(verdict, Deny), verdict
    assert verdict.code is code, verdict
    assert verdict.stage == "fraud"
    return verdict


# -- allow and alert ------------------------------------------------------------------------------------
async def test_an_allowed_request_learns_where_the_key_was_used() -> None:
    rig = Rig()
    verdict, ctx = await rig.place(order_body("c1"))
    assert verdict == ALLOW
    assert fraud(ctx) == {"action": "allow", "score": 0}
    assert rig.alerts == [] and ctx.recorded == []
    key_seen, account_seen = await rig.memory.sightings("k_alice", "alice")
    assert key_seen.addresses == {HOME} and key_seen.networks == {"10.0.0.0/24"}
    assert account_seen.networks == {"10.0.0.0/24"}
    assert rig.store.rows == {}  # written behind
    await rig.memory.flush()
    assert rig.store.rows == {("k_alice", HOME): ("alice", "10.0.0.0/24", rig.clock.now())}
    assert rig.engine.tracked_orders == 1
    assert [d.action for d in rig.decisions] == [Action.ALLOW]


async def test_a_keys_second_network_is_alerted_citing_the_ledger_entry() -> None:
    rig = Rig()
    await rig.place(order_body("c1"))
    verdict, ctx = await rig.send(order_body("c2"), ip="10.0.1.1")
    assert verdict == ALLOW  # an alert lets the order through
    assert fraud(ctx)["action"] == "alert"
    assert fraud(ctx)["score"] == pytest.approx(S.new_network_points)
    assert rules_of(ctx) == ["new_network"]
    assert rig.alerts == []  # not before the request's entry is durable
    finish(ctx, verdict, index=42)
    assert len(rig.alerts) == 1
    alert = rig.alerts[0]
    assert (alert.rule, alert.severity, alert.action) == ("fraud.new_network", Severity.WARNING, "alert")
    assert (alert.key_id, alert.account, alert.ledger_index) == ("k_alice", "alice", 42)
    assert alert.time == ctx.received_at
    assert alert.details["rules"] == ["new_network"]
    assert alert.details["score"] == pytest.approx(S.new_network_points)
    assert "never used by this key" in alert.reason and "10.0." not in alert.reason
    assert rig.engine.tracked_orders == 2  # the alerted order is tracked like any other
    # an alerted request teaches nothing: the network is still new next time
    key_seen, _ = await rig.memory.sightings("k_alice", "alice")
    assert "10.0.1.0/24" not in key_seen.networks
    _, again = await rig.place(order_body("c3", quantity="2"), ip="10.0.1.1")  # not a repeat of c2
    assert fraud(again)["action"] == "alert" and len(rig.alerts) == 2


async def test_a_stolen_key_market_buying_a_pumped_thin_coin_is_refused() -> None:
    """The 3Commas pattern with a market order: the thief's own asks stand 50 % above the last
    trade, so the market buy is measured at that touch, not waved through as priceless."""
    rig = Rig()
    await rig.place(order_body("c1"))  # the key's normal life, from its home network
    market = rig.market
    market.asks["THIN-USD"] = D("150")
    verdict, ctx = await rig.place(order_body("p1", symbol="THIN-USD", type="market", price=None), ip=AWAY)
    assert denied(verdict, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert rules_of(ctx) == ["new_network", "illiquid_symbol", "price_deviation"]
    assert fraud(ctx)["score"] == pytest.approx(S.new_network_points + S.illiquid_points + S.price_far_points)
    # the same market order at an ordinary touch is only alerted (new network, thin market)
    market.asks["THIN-USD"] = D("100.01")
    calm, cctx = await rig.place(order_body("p2", symbol="THIN-USD", type="market", price=None), ip=AWAY)
    assert calm == ALLOW and rules_of(cctx) == ["new_network", "illiquid_symbol"]


async def test_an_alert_that_cannot_be_queued_costs_the_request_nothing() -> None:
    rig = Rig()

    def broken(alert: Alert) -> bool:
        raise RuntimeError("queue full")

    rig.stage = FraudCheck(rig.engine, rig.memory, Market(rig.clock), rig.clock, alert=broken)
    await rig.place(order_body("c1"))
    verdict, ctx = await rig.send(order_body("c2"), ip="10.0.1.1")
    finish(ctx, verdict)  # does not raise
    assert verdict == ALLOW and len(ctx.recorded) == 1


# -- hold ----------------------------------------------------------------------------------------------
async def held(rig: Rig, body: dict[str, Any]) -> tuple[Hold, RequestContext]:
    """A fresh key's order from a network it never used: 1.35 points, held."""
    await rig.place(None, route="get_account", fresh=True)  # its first use, from HOME
    verdict, ctx = await rig.place(body, ip=AWAY, fresh=True)
    assert isinstance(verdict, Hold), verdict
    return verdict, ctx


async def test_a_held_order_stores_a_hold_and_its_retry_waits_for_the_operator() -> None:
    rig = Rig()
    verdict, ctx = await held(rig, order_body("c1"))
    assert verdict.stage == "fraud"
    hold_id = verdict.hold_id
    assert hold_id is not None and hold_id.startswith("hold_")
    assert fraud(ctx)["action"] == "hold" and fraud(ctx)["hold_id"] == hold_id
    assert fraud(ctx)["score"] == pytest.approx(S.new_network_points + S.fresh_key_points)
    hold = rig.store.held[hold_id]
    assert (hold.account, hold.key_id, hold.client_order_id) == ("alice", "k_alice", "c1")
    assert hold.status is HoldStatus.PENDING and hold.rules == ("new_network",)
    assert isinstance(ctx.payload, OrderRequest) and hold.fingerprint == ctx.payload.fingerprint()
    assert hold.score == pytest.approx(S.new_network_points + S.fresh_key_points)
    assert hold.created_at == rig.clock.now()
    assert rig.engine.tracked_orders == 0  # a held order goes no further
    assert [(a.rule, a.severity, a.action) for a in rig.alerts] == [
        ("fraud.new_network", Severity.CRITICAL, "hold")
    ]
    rig.clock.advance(30)
    again, retry = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
    assert again == Hold("fraud", f"hold {hold_id} awaits an operator", hold_id)
    assert fraud(retry) == {"action": "hold", "hold_id": hold_id, "hold": "pending"}
    assert list(rig.store.held) == [hold_id]  # no second hold
    assert rig.engine.tracked_orders == 0


async def test_a_confirmed_hold_lets_the_retry_through_and_vouches_for_its_network() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    stored = rig.store.held[verdict.hold_id]
    stored.status, stored.decided_by = HoldStatus.CONFIRMED, "operator"
    confirmed, ctx = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
    assert confirmed == ALLOW
    assert fraud(ctx) == {
        "action": "allow",
        "hold_id": verdict.hold_id,
        "hold": "confirmed",
        "by": "operator",
    }
    assert rig.engine.tracked_orders == 1
    key_seen, _ = await rig.memory.sightings("k_alice", "alice")
    assert AWAY in key_seen.addresses
    # the network is known now: the key's next order from there is not a new network
    _, later = await rig.place(order_body("c2"), ip=AWAY, fresh=True)
    assert fraud(later)["action"] == "allow"


async def test_a_retry_with_other_parameters_after_confirmation_is_a_conflict() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    rig.store.held[verdict.hold_id].status = HoldStatus.CONFIRMED
    changed, ctx = await rig.place(order_body("c1", quantity="50"), ip=AWAY, fresh=True)
    assert denied(changed, ErrorCode.IDEMPOTENCY_CONFLICT)
    assert fraud(ctx)["hold"] == "differs"
    assert rig.engine.tracked_orders == 0


async def test_a_rejected_hold_refuses_the_retry() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    rig.store.held[verdict.hold_id].status = HoldStatus.REJECTED
    refused, ctx = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
    assert denied(refused, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert fraud(ctx) == {"action": "deny", "hold_id": verdict.hold_id, "hold": "rejected"}
    assert rig.engine.tracked_orders == 0
    again, _ = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
    assert not isinstance(again, Allow)
    key_seen, _ = await rig.memory.sightings("k_alice", "alice")
    assert AWAY not in key_seen.addresses


async def test_a_read_that_would_be_held_is_only_alerted() -> None:
    rig = Rig()
    await rig.place(None, route="get_account", fresh=True)
    verdict, ctx = await rig.place(None, route="get_account", ip=AWAY, fresh=True)
    assert verdict == ALLOW
    assert fraud(ctx)["action"] == "alert"
    assert fraud(ctx)["score"] == pytest.approx(S.new_network_points + S.fresh_key_points)
    assert rig.store.held == {}
    assert [a.action for a in rig.alerts] == ["alert"]


async def test_a_rejected_order_stays_refused_on_every_retry() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    rig.store.held[verdict.hold_id].status = HoldStatus.REJECTED
    for _ in range(2):
        refused, _ = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
        assert denied(refused, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert list(rig.store.held) == [verdict.hold_id]


async def test_a_confirmed_hold_is_still_checked_for_self_match() -> None:
    rig = Rig(OWNERS)
    verdict, _ = await held(rig, order_body("a1", side="buy", price="100"))
    assert verdict.hold_id is not None
    resting, _ = await rig.place(order_body("b1", side="sell", price="100"), account="bob")
    assert resting == ALLOW  # alice's held order rests nowhere
    rig.store.held[verdict.hold_id].status = HoldStatus.CONFIRMED
    retry, ctx = await rig.place(order_body("a1", side="buy", price="100"), ip=AWAY, fresh=True)
    assert denied(retry, ErrorCode.RISK_REJECTED).public_reason == "SELF_MATCH_PREVENTED"
    assert fraud(ctx) == {"action": "deny", "hold_id": verdict.hold_id, "rules": ["self_match"]}


async def test_a_confirmed_hold_passes_after_a_restart() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    rig.store.held[verdict.hold_id].status = HoldStatus.CONFIRMED
    memory = FraudMemory(rig.store)  # a new process over the same store
    await memory.start(flush_loop=False)
    stage = FraudCheck(FraudEngine(S), memory, Market(rig.clock), rig.clock)
    ctx = await rig.ctx(order_body("c1"), ip=AWAY, fresh=True)
    assert await stage(ctx) == ALLOW
    assert fraud(ctx)["hold"] == "confirmed"
    await memory.close()


async def test_a_hold_that_vanished_from_the_store_refuses_the_retry() -> None:
    rig = Rig()
    verdict, _ = await held(rig, order_body("c1"))
    assert verdict.hold_id is not None
    del rig.store.held[verdict.hold_id]
    refused, _ = await rig.place(order_body("c1"), ip=AWAY, fresh=True)
    assert denied(refused, ErrorCode.SUSPICIOUS_ACTIVITY)


# -- deny and halt -----------------------------------------------------------------------------------------
THIEF = order_body("t1", symbol="THIN-USD", price="120")  # into a thin market, 20 % above the last price


async def test_a_halt_denies_and_halts_the_key_once_within_the_quiet_period() -> None:
    rig = Rig()
    await rig.place(None, route="get_account", fresh=True)
    verdict, ctx = await rig.place(THIEF, ip=AWAY, fresh=True)
    assert denied(verdict, ErrorCode.SUSPICIOUS_ACTIVITY).public_reason is None
    assert fraud(ctx)["action"] == "halt"
    assert rules_of(ctx) == ["new_network", "illiquid_symbol", "price_deviation"]
    assert len(rig.halts) == 1
    key_id, reason = rig.halts[0]
    assert key_id == "k_alice" and "new_network" in reason and "price_deviation" in reason
    assert [(a.severity, a.action) for a in rig.alerts] == [(Severity.CRITICAL, "halt")]
    assert rig.engine.tracked_orders == 0
    rig.clock.advance(HALT_QUIET_SECONDS - 1)
    again, _ = await rig.place(order_body("t2", symbol="THIN-USD", price="120"), ip=AWAY, fresh=True)
    assert denied(again, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert len(rig.halts) == 1  # halted a moment ago
    rig.clock.advance(1)
    await rig.place(order_body("t3", symbol="THIN-USD", price="120"), ip=AWAY, fresh=True)
    assert len(rig.halts) == 2


async def test_a_halt_that_fails_still_refuses() -> None:
    rig = Rig()

    def broken(key_id: str, reason: str) -> None:
        raise RuntimeError("control socket down")

    rig.stage = FraudCheck(rig.engine, rig.memory, Market(rig.clock), rig.clock, halt=broken)
    await rig.place(None, route="get_account", fresh=True)
    verdict, _ = await rig.place(THIEF, ip=AWAY, fresh=True)
    assert denied(verdict, ErrorCode.SUSPICIOUS_ACTIVITY)


async def test_a_deny_below_halt_at_does_not_halt() -> None:
    rig = Rig()
    await rig.place(None, route="get_account")
    verdict, ctx = await rig.place(THIEF, ip=AWAY)  # not fresh: 2.1 points
    assert denied(verdict, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert fraud(ctx)["action"] == "deny"
    assert rig.halts == []


async def test_an_order_without_a_reference_price_is_refused_fail_closed() -> None:
    """The risk stage refuses such orders first; one that got here anyway is not waved through."""
    rig = Rig()
    verdict, ctx = await rig.place(order_body("c1", symbol="NOPE-USD"), ip=AWAY)
    assert denied(verdict, ErrorCode.RISK_REJECTED).public_reason == "NO_REFERENCE_PRICE"
    assert "fraud" not in ctx.outcome
    assert rig.engine.tracked_orders == 0


async def test_no_principal_is_refused() -> None:
    rig = Rig()
    ctx = await rig.ctx(order_body("c1"))
    ctx.principal = None
    assert (await rig.stage(ctx)) == Deny("fraud", ErrorCode.AUTHENTICATION_FAILED, "no principal")


# -- self-match ---------------------------------------------------------------------------------------------
async def test_crossing_another_account_of_the_same_owner_is_refused() -> None:
    rig = Rig(OWNERS)
    first, _ = await rig.place(order_body("a1", side="buy", price="100"), account="alice")
    assert first == ALLOW
    verdict, ctx = await rig.place(order_body("b1", side="sell", price="100"), account="bob")
    refused = denied(verdict, ErrorCode.RISK_REJECTED)
    assert refused.public_reason == "SELF_MATCH_PREVENTED"
    assert "self_match" in rules_of(ctx) and fraud(ctx)["action"] == "deny"
    assert "alice's a1" in refused.reason
    assert rig.engine.tracked_orders == 1  # bob's order was not tracked
    market, _ = await rig.place(order_body("b2", side="sell", type="market", price=None), account="bob")
    assert denied(market, ErrorCode.RISK_REJECTED).public_reason == "SELF_MATCH_PREVENTED"


async def test_orders_that_would_not_trade_with_the_owners_own_pass() -> None:
    rig = Rig(OWNERS)
    await rig.place(order_body("a1", side="buy", price="100"), account="alice")
    short, _ = await rig.place(order_body("b1", side="sell", price="100.02"), account="bob")
    same_side, _ = await rig.place(order_body("b2", side="buy", price="100"), account="bob")
    other_owner, _ = await rig.place(order_body("c1", side="sell", price="100"), account="carol")
    market_buy, _ = await rig.place(order_body("b3", side="buy", type="market", price=None), account="bob")
    assert [short, same_side, other_owner, market_buy] == [ALLOW] * 4


async def test_an_order_that_goes_no_further_leaves_the_owner_book() -> None:
    rig = Rig(OWNERS)
    refused_later = Deny("forward", ErrorCode.ORDER_REJECTED, "the venue refused it")
    await rig.place(order_body("a1", side="buy", price="100"), account="alice", final=refused_later)
    assert rig.engine.tracked_orders == 0
    verdict, _ = await rig.place(order_body("b1", side="sell", price="100"), account="bob")
    assert verdict == ALLOW


# -- probing: the log phase's observer ---------------------------------------------------------------------
def denial(code: ErrorCode = ErrorCode.FORBIDDEN) -> Deny:
    return Deny("authz", code, "not yours")


def observe(rig: Rig, ctx: RequestContext, verdict: Verdict, index: int) -> dict[str, Any] | None:
    """What the pipeline does: observe before the entry, then call back with its index; the
    decision the entry would record (None when nothing was decided)."""
    ctx.outcome.pop("probing", None)
    ctx.recorded.clear()
    rig.stage.observe(ctx, verdict)
    for recorded in ctx.recorded:
        recorded(index)
    found = ctx.outcome.get("probing")
    assert found is None or isinstance(found, dict)
    return found


async def test_denials_of_a_key_are_probing_alerted_then_halted() -> None:
    rig = Rig()
    ctx = await rig.ctx(None, route="get_account")
    for i in range(1, S.probe_denials):
        assert observe(rig, ctx, denial(), i) is None  # below the threshold nothing is decided
    assert rig.alerts == [] and rig.halts == [] and rig.decisions == []
    decided = observe(rig, ctx, denial(ErrorCode.NOT_FOUND), 100)
    assert [(d.action, [x.rule for x in d.signals]) for d in rig.decisions] == [(Action.ALERT, ["probing"])]
    # the decision is in the denial's own entry, and the alert cites that entry
    assert decided is not None
    assert (decided["action"], decided["denials"], decided["score"]) == (
        "alert",
        S.probe_denials,
        S.probe_points,
    )
    assert [r["rule"] for r in decided["rules"]] == ["probing"]
    assert len(rig.alerts) == 1
    alert = rig.alerts[0]
    assert (alert.rule, alert.severity, alert.action) == ("fraud.probing", Severity.WARNING, "alert")
    assert alert.ledger_index == 100
    assert alert.details == {"denials": S.probe_denials, "last_code": "NOT_FOUND"}
    for i in range(S.probe_denials + 1, S.probe_halt_denials):
        decided = observe(rig, ctx, denial(), i)
        assert decided is not None and decided["action"] == "alert"  # recorded, not alerted again
    assert len(rig.alerts) == 1 and rig.halts == []  # one alert between the two thresholds
    decided = observe(rig, ctx, denial(), 200)
    assert decided is not None and (decided["action"], decided["denials"]) == ("halt", S.probe_halt_denials)
    assert [k for k, _ in rig.halts] == ["k_alice"]
    assert f"{S.probe_halt_denials} denials" in rig.halts[0][1]
    assert (rig.alerts[-1].severity, rig.alerts[-1].action) == (Severity.CRITICAL, "halt")
    assert rig.alerts[-1].ledger_index == 200
    observe(rig, ctx, denial(), 201)
    assert len(rig.halts) == 1  # not again within the quiet period
    assert len(rig.alerts) == 3


async def test_a_probing_decision_on_a_request_the_stage_judged_keeps_the_stages_decision() -> None:
    """A cancel the stage allowed, then refused by forward (another account's order id): the
    entry holds both the stage's decision and the probing one."""
    rig = Rig()
    for i in range(S.probe_denials):
        verdict, ctx = await rig.send(None, route="cancel_order")
        assert verdict == ALLOW
        judged = fraud(ctx)
        decided = observe(rig, ctx, denial(ErrorCode.NOT_FOUND), i)
        assert fraud(ctx) == judged  # untouched
    assert decided is not None and decided["action"] == "alert"


async def test_gateway_trouble_is_not_probing() -> None:
    rig = Rig()
    ctx = await rig.ctx(None, route="get_account")
    others = [
        ErrorCode.VENUE_UNAVAILABLE,
        ErrorCode.RATE_LIMITED,
        ErrorCode.OVERLOADED,
        ErrorCode.INTERNAL_ERROR,
    ]
    for i in range(S.probe_halt_denials * 2):
        observe(rig, ctx, denial(others[i % len(others)]), i)
        observe(rig, ctx, ALLOW, i)
        observe(rig, ctx, Hold("fraud", "held", "hold_x"), i)
    assert rig.alerts == [] and rig.halts == []
    assert len(rig.engine.activity("k_alice").denials) == 0
    anonymous = await rig.ctx(None, route="get_account")
    anonymous.principal = None
    for i in range(S.probe_halt_denials):
        observe(rig, anonymous, denial(), i)
    assert rig.alerts == [] and rig.halts == []


async def test_probing_denials_leave_the_window() -> None:
    rig = Rig()
    for i in range(S.probe_denials - 1):
        observe(rig, await rig.ctx(None, route="get_account"), denial(), i)
    rig.clock.advance(S.probe_window_seconds + 1)
    observe(rig, await rig.ctx(None, route="get_account"), denial(), 99)
    assert rig.alerts == []
    assert len(rig.engine.activity("k_alice").denials) == 1


async def test_a_probing_key_is_refused_orders_but_never_cancels() -> None:
    rig = Rig()
    await rig.place(None, route="get_account")
    for i in range(S.probe_denials):
        observe(rig, await rig.ctx(None, route="get_account"), denial(), i)
    order, ctx = await rig.place(order_body("c1"))
    assert denied(order, ErrorCode.SUSPICIOUS_ACTIVITY)
    assert rules_of(ctx) == ["probing"]
    read, _ = await rig.place(None, route="get_account")
    assert denied(read, ErrorCode.SUSPICIOUS_ACTIVITY)  # reads can be refused, just not held
    cancel, cctx = await rig.place(None, route="cancel_order", ip=AWAY, fresh=True)
    assert cancel == ALLOW
    assert fraud(cctx)["action"] == "alert"
    assert rules_of(cctx) == ["new_network", "probing"]


# -- against the forward stage and the paper venue: idempotent retries -----------------------------------
class SignedAs:
    name: ClassVar[str] = "authn"

    def __init__(self, account: str) -> None:
        self.principal = Principal("k_" + account, account, frozenset(Scope))

    async def __call__(self, ctx: RequestContext) -> Verdict:
        ctx.principal = self.principal
        return ALLOW


class PaperMarket:
    def __init__(self, rig: ForwardRig) -> None:
        self.instrument = rig.venue.inner.instrument
        self.quote = rig.venue.inner.quote

    def liquidity(self, symbol: str) -> Decimal | None:
        return None


class Chain:
    """Firewall, a stand-in for authn, the fraud stage and forward, on the paper venue (X-USD at 100)."""

    def __init__(self) -> None:
        self.base = ForwardRig()
        self.engine = FraudEngine(S)
        self.base.venue.inner.subscribe(self.engine.on_venue_order)
        memory = FraudMemory(MemoryFraudStore(OWNERS))
        self.fraud = FraudCheck(self.engine, memory, PaperMarket(self.base), self.base.clock)

    async def setup(self) -> Chain:
        await self.base.setup()
        return self

    async def send(self, body: dict[str, Any], account: str) -> tuple[Verdict, RequestContext]:
        ctx = context(Req("place_order", body), self.base.clock)
        stages = (Firewall(), SignedAs(account), self.fraud, self.base.forward)
        return await Pipeline(stages, self.base.ledger).run(ctx), ctx


async def test_an_identical_retry_of_a_resting_order_keeps_it_in_the_owner_book() -> None:
    chain = await Chain().setup()
    placed, _ = await chain.send(order_body("a1", price="90"), "alice")
    assert placed == ALLOW
    retry, ctx = await chain.send(order_body("a1", price="90"), "alice")
    assert retry == ALLOW and ctx.status == 200
    crossing, _ = await chain.send(order_body("b1", side="sell", price="90"), "bob")
    assert denied(crossing, ErrorCode.RISK_REJECTED).public_reason == "SELF_MATCH_PREVENTED"


async def test_a_conflicting_retry_does_not_hide_the_resting_order_from_self_match() -> None:
    chain = await Chain().setup()
    await chain.send(order_body("a1", price="90"), "alice")
    conflict, _ = await chain.send(order_body("a1", price="91"), "alice")
    assert isinstance(conflict, Deny) and conflict.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert [o.client_order_id for o in await chain.base.venue.inner.open_orders("alice", None)] == ["a1"]
    crossing, _ = await chain.send(order_body("b1", side="sell", price="90"), "bob")
    assert denied(crossing, ErrorCode.RISK_REJECTED).public_reason == "SELF_MATCH_PREVENTED"


async def test_a_retry_of_a_filled_order_does_not_block_the_owner_forever() -> None:
    chain = await Chain().setup()
    filled, ctx = await chain.send(order_body("a1", price="101"), "alice")  # marketable: fills at once
    assert filled == ALLOW and isinstance(ctx.result, OrderRecord) and ctx.result.snapshot is not None
    assert ctx.result.snapshot.status is OrderStatus.FILLED
    assert len(chain.engine.owners) == 0
    chain.base.clock.advance(30)
    retry, rctx = await chain.send(order_body("a1", price="101"), "alice")
    assert retry == ALLOW and rctx.status == 200
    sell, _ = await chain.send(order_body("b1", side="sell", price="101"), "bob")
    assert sell == ALLOW  # alice has nothing resting


async def test_an_order_whose_answer_was_lost_still_counts_for_self_match() -> None:
    chain = await Chain().setup()
    venue = chain.base.venue

    async def answer_lost(account: str, request: OrderRequest) -> VenueOrder:
        await venue.inner.place(account, request)
        raise VenueError("connection reset")

    venue.place = answer_lost  # type: ignore[method-assign]
    lost, _ = await chain.send(order_body("a1", price="90"), "alice")
    assert isinstance(lost, Deny) and lost.code is ErrorCode.VENUE_UNAVAILABLE
    assert [o.client_order_id for o in await venue.inner.open_orders("alice", None)] == ["a1"]
    venue.place = venue.inner.place  # type: ignore[method-assign]
    crossing, _ = await chain.send(order_body("b1", side="sell", price="90"), "bob")
    assert denied(crossing, ErrorCode.RISK_REJECTED).public_reason == "SELF_MATCH_PREVENTED"


async def test_the_fraud_stages_own_refusals_are_not_probing() -> None:
    """Counting them would let one refusal feed the next, for ever (a held bot that retries)."""
    rig = Rig()
    ctx = await rig.ctx(None, route="get_account")
    for i in range(S.probe_halt_denials + 1):
        observe(rig, ctx, Deny("fraud", ErrorCode.SUSPICIOUS_ACTIVITY, "refused"), i)
        observe(rig, ctx, Deny("fraud", ErrorCode.RISK_REJECTED, "self-match", "SELF_MATCH_PREVENTED"), i)
    assert rig.alerts == [] and rig.halts == []
    assert len(rig.engine.activity("k_alice").denials) == 0
