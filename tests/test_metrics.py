"""Prometheus metrics: what the exposition says after requests, stage timings and venue reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bastion.clock import FakeClock
from bastion.domain.orders import Fill, OrderStatus, OrderType, Side, TimeInForce, VenueOrder
from bastion.domain.trading import Level, TradingState
from bastion.domain.verdict import ALLOW, Deny, Hold, Verdict
from bastion.errors import ErrorCode
from bastion.metrics import Metrics
from bastion.pipeline.chain import Pipeline
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import Firewall
from bastion.state.trading import TradingStates
from bastion.store.memory import MemoryLedger
from tests.support import Req, context

D = Decimal
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Gauges:
    def __init__(self) -> None:
        self.ledger = 0
        self.in_flight = 0


def build() -> tuple[Metrics, TradingStates, Gauges]:
    trading = TradingStates()
    gauges = Gauges()
    return Metrics(trading, lambda: gauges.ledger, lambda: gauges.in_flight), trading, gauges


def samples(metrics: Metrics) -> list[Sample]:
    text = metrics.render().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    found = [s.value for s in samples(metrics) if s.name == name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else None


def done(metrics: Metrics, route: str, verdict: Verdict, seconds: float = 0.002) -> None:
    metrics.request_done(context(Req(route), FakeClock()), verdict, seconds)


def venue_order(status: OrderStatus, fills: int, *, vid: str = "v1", filled: str = "0") -> VenueOrder:
    return VenueOrder(
        venue_order_id=vid,
        client_order_id="c_" + vid,
        symbol="X-USD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        quantity=D(1),
        price=D(100),
        status=status,
        filled_quantity=D(filled),
        average_price=None,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=fills),
        fills=tuple(Fill(D(100), D("0.25"), T0) for _ in range(fills)),
    )


def test_every_name_is_bastions() -> None:
    metrics, _, _ = build()
    done(metrics, "place_order", ALLOW)
    metrics.stage_done("fraud", 0.0001)
    metrics.on_venue_order("alice", venue_order(OrderStatus.NEW, 0))
    text = metrics.render().decode()
    families = list(text_string_to_metric_families(text))
    assert families
    assert all(f.name.startswith("bastion_") for f in families)
    assert all(s.name.startswith("bastion_") for f in families for s in f.samples)
    names = {f.name for f in families}
    assert {
        "bastion_requests",
        "bastion_stage_duration_seconds",
        "bastion_request_duration_seconds",
        "bastion_orders",
        "bastion_fills",
        "bastion_cancels",
        "bastion_requests_in_flight",
        "bastion_killswitch_state",
        "bastion_killswitch_restricted",
        "bastion_ledger_entries",
    } <= names
    assert not any(n.startswith(("python_", "process_")) for n in names)  # never the global registry


def test_requests_are_counted_by_route_verdict_stage_and_code() -> None:
    metrics, _, _ = build()
    done(metrics, "place_order", ALLOW)
    done(metrics, "place_order", ALLOW)
    done(metrics, "place_order", Deny("fraud", ErrorCode.SUSPICIOUS_ACTIVITY, "x"))
    done(metrics, "place_order", Hold("fraud", "held", "hold_1"))
    done(metrics, "get_account", Deny("ratelimit", ErrorCode.RATE_LIMITED, "slow down"))
    counted = {
        (s.labels["route"], s.labels["verdict"], s.labels["stage"], s.labels["code"]): s.value
        for s in samples(metrics)
        if s.name == "bastion_requests_total"
    }
    assert counted == {
        ("place_order", "allow", "", ""): 2.0,
        ("place_order", "deny", "fraud", "SUSPICIOUS_ACTIVITY"): 1.0,
        ("place_order", "hold", "fraud", "STEP_UP_REQUIRED"): 1.0,
        ("get_account", "deny", "ratelimit", "RATE_LIMITED"): 1.0,
    }
    assert value(metrics, "bastion_request_duration_seconds_count", route="place_order") == 4.0
    assert value(metrics, "bastion_request_duration_seconds_sum", route="get_account") == 0.002


def test_stage_durations_are_histograms_per_stage() -> None:
    metrics, _, _ = build()
    metrics.stage_done("fraud", 0.00002)
    metrics.stage_done("fraud", 0.003)
    metrics.stage_done("risk", 0.0001)
    assert value(metrics, "bastion_stage_duration_seconds_count", stage="fraud") == 2.0
    assert value(metrics, "bastion_stage_duration_seconds_count", stage="risk") == 1.0
    assert value(metrics, "bastion_stage_duration_seconds_bucket", stage="fraud", le="2.5e-05") == 1.0
    assert value(metrics, "bastion_stage_duration_seconds_bucket", stage="fraud", le="0.005") == 2.0
    assert value(metrics, "bastion_stage_duration_seconds_bucket", stage="fraud", le="+Inf") == 2.0


def test_each_change_of_an_order_is_counted_once() -> None:
    metrics, _, _ = build()
    metrics.on_venue_order("alice", venue_order(OrderStatus.NEW, 0))
    metrics.on_venue_order("alice", venue_order(OrderStatus.PARTIALLY_FILLED, 1, filled="0.25"))
    metrics.on_venue_order("alice", venue_order(OrderStatus.PARTIALLY_FILLED, 1, filled="0.25"))  # again
    assert value(metrics, "bastion_fills_total") == 1.0
    metrics.on_venue_order("alice", venue_order(OrderStatus.PARTIALLY_FILLED, 2, filled="0.5"))
    metrics.on_venue_order("alice", venue_order(OrderStatus.CANCELED, 2, filled="0.5"))
    assert value(metrics, "bastion_orders_total", event="placed") == 1.0
    assert value(metrics, "bastion_orders_total", event="canceled") == 1.0
    assert value(metrics, "bastion_orders_total", event="partially_filled") is None
    assert value(metrics, "bastion_fills_total") == 2.0
    assert value(metrics, "bastion_cancels_total") == 1.0
    # an order reported only once it has filled: placed, its fills, filled
    metrics.on_venue_order("alice", venue_order(OrderStatus.FILLED, 4, vid="v2", filled="1"))
    assert value(metrics, "bastion_orders_total", event="placed") == 2.0
    assert value(metrics, "bastion_orders_total", event="filled") == 1.0
    assert value(metrics, "bastion_fills_total") == 6.0
    assert value(metrics, "bastion_cancels_total") == 1.0
    # the same venue order id in another account is another order; an expiry is a cancel
    metrics.on_venue_order("bob", venue_order(OrderStatus.EXPIRED, 0))
    assert value(metrics, "bastion_orders_total", event="placed") == 3.0
    assert value(metrics, "bastion_orders_total", event="expired") == 1.0
    assert value(metrics, "bastion_cancels_total") == 2.0
    # a rejection closes an order but cancels nothing
    metrics.on_venue_order("bob", venue_order(OrderStatus.REJECTED, 0, vid="v3"))
    assert value(metrics, "bastion_orders_total", event="rejected") == 1.0
    assert value(metrics, "bastion_cancels_total") == 2.0


def test_the_kill_switch_gauges_follow_the_trading_states() -> None:
    metrics, trading, _ = build()
    assert value(metrics, "bastion_killswitch_state", level="global") == 0.0
    trading.set(Level.GLOBAL, "", TradingState.REDUCING)
    assert value(metrics, "bastion_killswitch_state", level="global") == 1.0
    trading.set(Level.GLOBAL, "", TradingState.HALTED)
    assert value(metrics, "bastion_killswitch_state", level="global") == 2.0
    assert value(metrics, "bastion_killswitch_restricted", level="key", state="halted") == 0.0
    trading.set(Level.KEY, "k1", TradingState.HALTED)
    trading.set(Level.KEY, "k2", TradingState.HALTED)
    trading.set(Level.ACCOUNT, "alice", TradingState.REDUCING)
    assert value(metrics, "bastion_killswitch_restricted", level="key", state="halted") == 2.0
    assert value(metrics, "bastion_killswitch_restricted", level="account", state="reducing") == 1.0
    assert value(metrics, "bastion_killswitch_restricted", level="account", state="halted") == 0.0
    trading.set(Level.GLOBAL, "", TradingState.ACTIVE)
    assert value(metrics, "bastion_killswitch_state", level="global") == 0.0


def test_ledger_size_and_requests_in_flight_are_read_when_scraped() -> None:
    metrics, _, gauges = build()
    assert value(metrics, "bastion_ledger_entries") == 0.0
    gauges.ledger, gauges.in_flight = 1234, 7
    assert value(metrics, "bastion_ledger_entries") == 1234.0
    assert value(metrics, "bastion_requests_in_flight") == 7.0


def test_two_metrics_objects_do_not_share_counts() -> None:
    first, _, _ = build()
    second, _, _ = build()
    done(first, "place_order", ALLOW)
    assert (
        value(first, "bastion_requests_total", route="place_order", verdict="allow", stage="", code="") == 1.0
    )
    assert (
        value(second, "bastion_requests_total", route="place_order", verdict="allow", stage="", code="")
        is None
    )


class Refuse:
    name: ClassVar[str] = "authz"

    async def __call__(self, ctx: RequestContext) -> Verdict:
        return Deny(self.name, ErrorCode.FORBIDDEN, "not yours")


async def test_the_pipeline_times_its_stages_and_counts_its_requests() -> None:
    ticks = iter(range(100))
    metrics, _, gauges = build()
    ledger = MemoryLedger()
    pipeline = Pipeline((Firewall(), Refuse()), ledger, timer=metrics, clock=lambda: float(next(ticks)))
    verdict = await pipeline.run(context(Req("get_account"), FakeClock()))
    assert isinstance(verdict, Deny)
    gauges.ledger = len(ledger.rows)
    assert value(metrics, "bastion_stage_duration_seconds_count", stage="firewall") == 1.0
    assert value(metrics, "bastion_stage_duration_seconds_count", stage="authz") == 1.0
    assert (
        value(
            metrics,
            "bastion_requests_total",
            route="get_account",
            verdict="deny",
            stage="authz",
            code="FORBIDDEN",
        )
        == 1.0
    )
    assert value(metrics, "bastion_request_duration_seconds_sum", route="get_account") == 3.0  # ticks 0 → 3
    assert value(metrics, "bastion_ledger_entries") == 1.0
