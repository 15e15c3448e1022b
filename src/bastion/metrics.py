"""Prometheus metrics: what an operator watches (``GET /metrics``, every name ``bastion_``).

One registry per process's services (never the library's global one, so tests and tools can
build several).  Counters are bumped by the pipeline's log phase and by the venue's order
reports; gauges that mirror state (the kill switch, the ledger's size, requests in flight)
are read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bastion.domain.orders import VenueOrder
from bastion.domain.trading import Level, TradingState
from bastion.domain.verdict import Allow, Deny, Hold, Verdict
from bastion.http.protocol import REFUSED
from bastion.pipeline.context import RequestContext
from bastion.state.trading import TradingStates

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5)
ALERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STATE_VALUE = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class _StateCollector(Collector):
    """The kill switch as it is in force, read at scrape time."""

    def __init__(self, trading: TradingStates, ledger_size: Callable[[], int]) -> None:
        self._trading = trading
        self._ledger_size = ledger_size

    def collect(self):  # type: ignore[no-untyped-def]  # prometheus_client's own signature
        state = GaugeMetricFamily(
            "bastion_killswitch_state",
            "Global trading state: 0 active, 1 reducing, 2 halted",
            labels=["level"],
        )
        state.add_metric(["global"], _STATE_VALUE[self._trading.get(Level.GLOBAL, "")])
        yield state
        restricted = GaugeMetricFamily(
            "bastion_killswitch_restricted",
            "Accounts and keys not active, by level and state",
            labels=["level", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        for level, _subject, st in self._trading.not_active():
            if level is not Level.GLOBAL:
                counts[(level.value, st.value)] = counts.get((level.value, st.value), 0) + 1
        for level in (Level.ACCOUNT, Level.KEY):
            for st in (TradingState.REDUCING, TradingState.HALTED):
                restricted.add_metric([level.value, st.value], counts.get((level.value, st.value), 0))
        yield restricted
        yield GaugeMetricFamily("bastion_ledger_entries", "Entries in the ledger", value=self._ledger_size())
        refused = CounterMetricFamily(
            "bastion_connections_refused",
            "Connections cut before they became requests (slow or oversized heads, too many per address)",
            labels=["reason"],
        )
        for reason, count in sorted(REFUSED.items()):
            refused.add_metric([reason], count)
        yield refused

    def describe(self):  # type: ignore[no-untyped-def]
        return []


class Metrics:
    def __init__(
        self, trading: TradingStates, ledger_size: Callable[[], int], in_flight: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bastion_requests",
            "Requests by route, verdict, deciding stage and error code",
            ["route", "verdict", "stage", "code"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "bastion_stage_duration_seconds",
            "Time spent in each pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "bastion_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            ["route"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.orders = Counter("bastion_orders", "Order events reported by the venue", ["event"], registry=r)
        self.fills = Counter("bastion_fills", "Fills reported by the venue", registry=r)
        self.cancels = Counter("bastion_cancels", "Orders cancelled or expired at the venue", registry=r)
        self.fraud = Counter(
            "bastion_fraud_decisions", "Fraud stage decisions by action", ["action"], registry=r
        )
        self.fraud_rules = Counter("bastion_fraud_rules", "Fraud rules that fired", ["rule"], registry=r)
        self.alerts = Counter(
            "bastion_alerts",
            "Alerts by rule and outcome (submitted, suppressed, delivered, failed)",
            ["rule", "outcome"],
            registry=r,
        )
        self.alert_latency = Histogram(
            "bastion_alert_latency_seconds",
            "From the triggering request to the alert leaving Bastion",
            buckets=ALERT_BUCKETS,
            registry=r,
        )
        gauge = Gauge("bastion_requests_in_flight", "Requests being handled now", registry=r)
        gauge.set_function(lambda: float(in_flight()))
        r.register(_StateCollector(trading, ledger_size))
        self._stage_children: dict[str, Histogram] = {}
        self._children: dict[str, Counter] = {}
        self._rule_children: dict[str, Counter] = {}
        # label children looked up once: every request passes here (codes and routes are few)
        self._request_children: dict[tuple[str, str, str, str], Counter] = {}
        self._route_children: dict[str, Histogram] = {}
        self._seen: dict[tuple[str, str], float] = {}

    def fraud_decided(self, action: str, rules: list[str]) -> None:
        """One fraud decision (children cached: this runs for every order)."""
        child = self._children.get(action)
        if child is None:
            child = self._children[action] = self.fraud.labels(action)
        child.inc()
        for rule in rules:
            counter = self._rule_children.get(rule)
            if counter is None:
                counter = self._rule_children[rule] = self.fraud_rules.labels(rule)
            counter.inc()

    def stage_done(self, stage: str, seconds: float) -> None:
        child = self._stage_children.get(stage)
        if child is None:
            child = self._stage_children[stage] = self.stage_seconds.labels(stage)
        child.observe(seconds)

    def request_done(self, ctx: RequestContext, verdict: Verdict, seconds: float) -> None:
        if isinstance(verdict, Allow):
            labels = (ctx.route.name, "allow", "", "")
        elif isinstance(verdict, Deny):
            labels = (ctx.route.name, "deny", verdict.stage, verdict.code.value)
        elif isinstance(verdict, Hold):
            labels = (ctx.route.name, "hold", verdict.stage, "STEP_UP_REQUIRED")
        counter = self._request_children.get(labels)
        if counter is None:
            counter = self._request_children[labels] = self.requests.labels(*labels)
        counter.inc()
        histogram = self._route_children.get(ctx.route.name)
        if histogram is None:
            histogram = self._route_children[ctx.route.name] = self.request_seconds.labels(ctx.route.name)
        histogram.observe(seconds)

    def on_venue_order(self, account: str, order: VenueOrder) -> None:
        """Counts each change once: a new order, each fill, a close."""
        key = (account, order.venue_order_id)
        filled_before = self._seen.get(key)
        if filled_before is None:
            self.orders.labels("placed").inc()
            filled_before = 0.0
        fills_now = float(len(order.fills))
        if fills_now > filled_before:
            self.fills.inc(fills_now - filled_before)
        if order.status.is_open:
            self._seen[key] = fills_now
            return
        self._seen.pop(key, None)
        self.orders.labels(order.status.value).inc()
        if order.status.value in ("canceled", "expired"):
            self.cancels.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
