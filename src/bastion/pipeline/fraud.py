"""Fraud stage: behaviour checks between risk and forward (docs/fraud.md).

For every request it judges the key's address against where the key and its account were
used before; for a new order it also runs the order rules (illiquid symbol, price far from
the reference, bursts against the key's own baseline, spoofing windows, self-match across the
owner's accounts) and the learned per-key score, and combines them (``fraud/engine.py``):

- allow, or allow and **alert** an operator;
- **hold**: refused with ``403 STEP_UP_REQUIRED`` until an operator confirms the order
  (``bastion fraud confirm HOLD_ID``); the bot's retry with the same client order id then goes
  through (a rejected hold stays refused);
- **deny**: ``403 SUSPICIOUS_ACTIVITY`` (a self-match: ``422 RISK_REJECTED`` with the public
  reason ``SELF_MATCH_PREVENTED``);
- **halt** the key: deny, and the key's kill switch is set to HALTED with its open orders
  cancelled.

Every decision (action, score, rules) goes into the request's ledger entry; alerts carry that
entry's index.  The stage also watches every verdict of the key's requests (``observe``):
repeated denials are probing.  Scoring is inline; the model learns later, off the path.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import ClassVar, Protocol

import structlog

from bastion.alerts.alert import Alert, Severity
from bastion.config import FraudSettings
from bastion.domain.instruments import Instrument
from bastion.domain.orders import OrderRequest, OrderType, Side, Ticker
from bastion.domain.principals import Principal
from bastion.domain.verdict import ALLOW, Allow, Deny, Hold, Verdict
from bastion.errors import ErrorCode
from bastion.fraud.engine import Action, Assessment, FraudEngine, Kind
from bastion.fraud.networks import KeyOrigin, network_of
from bastion.fraud.rules import PROBING, OrderFacts, Signal
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, HoldRecord, HoldStatus, OrderRecord
from bastion.state.fraud import FraudMemory

log = structlog.get_logger("bastion.fraud")
HALT_QUIET_SECONDS = 60.0
_VENUE_MAY_HOLD = (ErrorCode.VENUE_UNAVAILABLE, ErrorCode.INTERNAL_ERROR)

# Refusals that say something about the caller (not the gateway's or venue's own trouble).
PROBE_CODES = frozenset(
    {
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.BAD_REQUEST,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.RISK_REJECTED,
        ErrorCode.IDEMPOTENCY_CONFLICT,
    }
)  # not the fraud stage's own refusals: counting them would let one refusal feed the next
_SEVERITY = {
    Action.ALERT: Severity.WARNING,
    Action.HOLD: Severity.CRITICAL,
    Action.DENY: Severity.CRITICAL,
    Action.HALT: Severity.CRITICAL,
}


class FraudMarket(Protocol):
    """What the stage reads of the market, from memory."""

    def instrument(self, symbol: str) -> Instrument | None: ...

    def quote(self, symbol: str) -> Ticker | None: ...

    def liquidity(self, symbol: str) -> Decimal | None:
        """A typical 24-hour volume in the quote currency (the venue's figure), or None when unknown."""
        ...


AlertSubmit = Callable[[Alert], bool]
HaltKey = Callable[[str, str], None]  # (key id, reason): set the key's kill switch, cancel its orders


def new_hold_id() -> str:
    return "hold_" + secrets.token_hex(10)


class FraudCheck:
    name: ClassVar[str] = "fraud"

    def __init__(
        self,
        engine: FraudEngine,
        memory: FraudMemory,
        market: FraudMarket,
        clock: Clock,
        *,
        alert: AlertSubmit | None = None,
        halt: HaltKey | None = None,
        on_decision: Callable[[Assessment], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings: FraudSettings = engine.settings
        self._memory = memory
        self._market = market
        self._clock = clock
        self._alert = alert
        self._halt = halt
        self._on_decision = on_decision
        self._halted: dict[str, float] = {}  # key id -> when this process last halted it

    async def __call__(self, ctx: RequestContext) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, "no principal")
        route = ctx.route.name
        now = self._clock.now()
        kind = Kind.ORDER if route == "place_order" else Kind.CANCEL if route == "cancel_order" else Kind.READ
        request: OrderRequest | None = None
        if kind is Kind.ORDER:
            if not isinstance(ctx.payload, OrderRequest):
                return Deny(self.name, ErrorCode.BAD_REQUEST, "no decoded order")
            request = ctx.payload
        account = principal.account
        if isinstance(request, OrderRequest):
            held = self._memory.hold_for(account, request.client_order_id)
            if held is not None:
                return await self._held(ctx, principal, request, held, now)
            if self.engine.tracks(account, request.client_order_id):
                # a retry of an order in flight or open: forward answers it (or refuses a changed
                # one with a 409); judging or counting it again would be counting one order twice
                ctx.outcome["fraud"] = {"action": "allow", "retry": True}
                return ALLOW
        key_seen, account_seen = await self._memory.sightings(principal.key_id, account)
        owner = await self._memory.owner(account)
        address = ctx.client_ip
        network = network_of(address, self.settings.ipv4_prefix, self.settings.ipv6_prefix)
        origin = KeyOrigin(ctx.key.created_at if ctx.key is not None else None)
        facts = None
        if isinstance(request, OrderRequest):
            facts = self._facts(request)
            if facts is None:  # the risk stage refuses these first; should one get here, fail closed
                return Deny(self.name, ErrorCode.RISK_REJECTED, "no reference price", "NO_REFERENCE_PRICE")
        assessment = self.engine.assess(
            kind=kind,
            key_id=principal.key_id,
            owner=owner,
            address=address,
            network=network,
            key_seen=key_seen,
            account_seen=account_seen,
            origin=origin,
            now=now,
            order=facts,
        )
        return await self._apply(ctx, principal, assessment, request, facts, owner, network, now)

    def _facts(self, request: OrderRequest) -> OrderFacts | None:
        quote = self._market.quote(request.symbol)
        if quote is None:
            return None
        touch = quote.ask if request.side is Side.BUY else quote.bid
        price = request.price if request.type is OrderType.LIMIT else None
        return OrderFacts(
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            price=price,
            notional=request.quantity * (price if price is not None else touch),
            reference=quote.last,
            liquidity=self._market.liquidity(request.symbol),
            touch=touch,
            quantity=request.quantity,
        )

    async def _apply(
        self,
        ctx: RequestContext,
        principal: Principal,
        assessment: Assessment,
        request: OrderRequest | None,
        facts: OrderFacts | None,
        owner: str,
        network: str,
        now: datetime,
    ) -> Verdict:
        action = assessment.action
        ctx.outcome["fraud"] = assessment.facts()
        if self._on_decision is not None:
            self._on_decision(assessment)
        if action is Action.ALLOW:
            self._memory.learn(principal.key_id, principal.account, ctx.client_ip, network, now)
        if request is not None and facts is not None:
            self.engine.note_order(principal.key_id, facts, request.client_order_id, now)
        if action in (Action.ALLOW, Action.ALERT) and request is not None and facts is not None:
            self._track(ctx, principal, owner, request, facts, assessment, now)
        if action is not Action.ALLOW:
            self._raise_alert(ctx, principal, assessment)
        if action in (Action.ALLOW, Action.ALERT):
            return ALLOW
        reason = "; ".join(f"{s.rule}: {s.reason}" for s in assessment.signals)
        if action is Action.HOLD and request is not None:
            hold = HoldRecord(
                id=new_hold_id(),
                account=principal.account,
                key_id=principal.key_id,
                client_order_id=request.client_order_id,
                fingerprint=request.fingerprint(),
                score=assessment.score,
                rules=tuple(s.rule for s in assessment.signals),
                reason=reason[:2000],
                created_at=now,
            )
            await self._memory.create_hold(hold)
            ctx.outcome["fraud"] = assessment.facts() | {"hold_id": hold.id}
            return Hold(self.name, reason, hold.id)
        if action is Action.HALT:
            self._halt_key(principal.key_id, reason)
        if assessment.self_match is not None:
            return Deny(self.name, ErrorCode.RISK_REJECTED, reason, "SELF_MATCH_PREVENTED")
        return Deny(self.name, ErrorCode.SUSPICIOUS_ACTIVITY, reason)

    async def _held(
        self, ctx: RequestContext, principal: Principal, request: OrderRequest, hold_id: str, now: datetime
    ) -> Verdict:
        """A retry of a held order: through once confirmed (self-match is still checked)."""
        hold = await self._memory.refresh_hold(hold_id)
        if hold is None or hold.status is HoldStatus.REJECTED:  # refused for good, on every retry
            ctx.outcome["fraud"] = {"action": "deny", "hold_id": hold_id, "hold": "rejected"}
            return Deny(
                self.name, ErrorCode.SUSPICIOUS_ACTIVITY, f"hold {hold_id} was rejected by an operator"
            )
        if hold.status is HoldStatus.PENDING:
            ctx.outcome["fraud"] = {"action": "hold", "hold_id": hold_id, "hold": "pending"}
            return Hold(self.name, f"hold {hold_id} awaits an operator", hold_id)
        if hold.fingerprint != request.fingerprint():
            ctx.outcome["fraud"] = {"action": "deny", "hold_id": hold_id, "hold": "differs"}
            return Deny(self.name, ErrorCode.IDEMPOTENCY_CONFLICT, f"differs from held order {hold_id}")
        facts = self._facts(request)
        owner = await self._memory.owner(principal.account)
        if facts is not None:
            crossing = self.engine.owners.crossing(owner, facts.symbol, facts.side, facts.reach)
            if crossing is not None:
                ctx.outcome["fraud"] = {"action": "deny", "hold_id": hold_id, "rules": ["self_match"]}
                return Deny(
                    self.name,
                    ErrorCode.RISK_REJECTED,
                    "self-match after confirmation",
                    "SELF_MATCH_PREVENTED",
                )
            confirmed = Assessment(Action.ALERT, hold.score, ())  # not learned from: it was held
            self._track(ctx, principal, owner, request, facts, confirmed, now)
        network = network_of(ctx.client_ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix)
        # an operator vouched for this order, and so for where it came from
        self._memory.learn(principal.key_id, principal.account, ctx.client_ip, network, now)
        ctx.outcome["fraud"] = {
            "action": "allow",
            "hold_id": hold_id,
            "hold": "confirmed",
            "by": hold.decided_by,
        }
        return ALLOW

    def _track(
        self,
        ctx: RequestContext,
        principal: Principal,
        owner: str,
        request: OrderRequest,
        facts: OrderFacts,
        assessment: Assessment,
        now: datetime,
    ) -> None:
        """Into the key's windows and the owner's book; out again if the order goes no further."""
        self.engine.record_order(
            key_id=principal.key_id,
            account=principal.account,
            owner=owner,
            request=request,
            notional=facts.notional,
            assessment=assessment,
            now=now,
        )
        ctx.finalizers.append(partial(self._settle, ctx, principal.account, request.client_order_id))

    def _settle(self, ctx: RequestContext, account: str, client_order_id: str, verdict: Verdict) -> None:
        """At the end of the request: forget what the venue never took, or what is closed."""
        if isinstance(verdict, Deny):
            recorded = "order_id" in ctx.outcome  # stored as pending before the venue was called
            if recorded and verdict.code in _VENUE_MAY_HOLD:
                return  # the venue may hold it: it may rest, so it still counts for self-match
            self.engine.forget_order(account, client_order_id)
            return
        if not isinstance(verdict, Allow):
            self.engine.forget_order(account, client_order_id)
            return
        record = ctx.result
        if ctx.outcome.get("idempotent_replay") and isinstance(record, OrderRecord):
            snapshot = record.snapshot
            if snapshot is not None and not snapshot.status.is_open:
                self.engine.forget_order(account, client_order_id)  # a retry of a closed order

    def _halt_key(self, key_id: str, reason: str) -> None:
        now = self._clock.now().timestamp()
        if self._halt is None or now - self._halted.get(key_id, -1e18) < HALT_QUIET_SECONDS:
            return  # halted a moment ago: once is enough
        self._halted[key_id] = now
        try:
            self._halt(key_id, reason)
        except Exception:  # the order is refused all the same
            log.exception("fraud_halt_failed", key_id=key_id)

    def _raise_alert(self, ctx: RequestContext, principal: Principal, assessment: Assessment) -> None:
        if self._alert is None:
            return
        top = assessment.top
        rule = top.rule if top is not None else "fraud"
        alert = partial(
            Alert,
            rule=f"fraud.{rule}",
            severity=_SEVERITY.get(assessment.action, Severity.WARNING),
            key_id=principal.key_id,
            account=principal.account,
            action=assessment.action.value,
            reason="; ".join(s.reason for s in assessment.signals)[:500],
            time=ctx.received_at,
            details={"score": round(assessment.score, 4), "rules": [s.rule for s in assessment.signals]},
        )
        submit = self._alert
        ctx.recorded.append(lambda index: self._submit(submit, alert(ledger_index=index)))

    @staticmethod
    def _submit(submit: AlertSubmit, alert: Alert) -> None:
        try:
            submit(alert)
        except Exception:  # an alert that cannot be queued must not cost the request its answer
            log.exception("alert_submit_failed", rule=alert.rule)

    # -- the log phase: every verdict of the key's requests --------------------------------
    def observe(self, ctx: RequestContext, verdict: Verdict) -> None:
        """Repeated denials of one key are probing: an alert at ``probe_denials``, a halt at
        ``probe_halt_denials``.  Runs before the request's entry is built, so each decision
        (its action, points and count) is recorded in the entry of the denial that made it,
        as ``outcome.probing``, and the alert cites that entry."""
        principal = ctx.principal
        if principal is None or not isinstance(verdict, Deny) or verdict.code not in PROBE_CODES:
            return
        if verdict.stage == self.name:
            return
        s = self.settings
        count = self.engine.record_denial(principal.key_id, ctx.received_at)
        if count < s.probe_denials:
            return
        halting = count >= s.probe_halt_denials
        action = Action.HALT if halting else Action.ALERT
        signal = Signal(PROBING, s.probe_points, f"{count} denials in {s.probe_window_seconds:g} s")
        decision = Assessment(action, signal.points, (signal,))
        # its own member: a denial after the stage ran (forward's 404) keeps the stage's decision
        ctx.outcome["probing"] = decision.facts() | {"denials": count}
        if self._on_decision is not None:
            self._on_decision(decision)
        if halting:
            self._halt_key(principal.key_id, signal.reason)
        submit = self._alert
        if submit is None or not (count == s.probe_denials or halting):
            return
        alert = partial(
            Alert,
            rule=f"fraud.{PROBING}",
            severity=Severity.CRITICAL if halting else Severity.WARNING,
            key_id=principal.key_id,
            account=principal.account,
            action=action.value,
            reason=signal.reason,
            time=ctx.received_at,
            details={"denials": count, "last_code": verdict.code.value},
        )
        ctx.recorded.append(lambda index: self._submit(submit, alert(ledger_index=index)))
