"""The pipeline's order, declared once, and the runner with its log phase.

Stages run cheapest first so floods of bad requests are dropped before expensive work:

    shield → firewall → authn → replay → ratelimit → authz → risk → fraud → forward

Every verdict, allowed or denied, is appended to the ledger before the caller gets an
answer.  A stage that raises denies with ``INTERNAL_ERROR``: the gateway fails closed.
Before the entry is built the observers see the verdict (the fraud stage's probing rule: what
it decides goes into this entry's ``outcome``); once the entry is durable, the request's
``recorded`` callbacks get its index (alerts cite it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import structlog

from bastion.domain.verdict import ALLOW, Allow, Deny, Hold, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.authn import Authenticate
from bastion.pipeline.authz import Authorize
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import Firewall
from bastion.pipeline.forward import Forward
from bastion.pipeline.fraud import FraudCheck
from bastion.pipeline.ratelimit import RateLimit
from bastion.pipeline.replay import ReplayGuard
from bastion.pipeline.risk import RiskCheck
from bastion.pipeline.shield import Shield
from bastion.ports import (
    Clock,
    KeySecrets,
    KeyStore,
    KeyUsage,
    Ledger,
    LedgerProofs,
    NonceStore,
    OrderStore,
    Venue,
)
from bastion.risk.engine import RiskEngine
from bastion.state.policies import PolicyCache
from bastion.state.trading import TradingStates
from bastion.vault.subjects import SubjectKeys

_RECEIPTED = frozenset({"place_order", "cancel_order"})
STAGE_ORDER = ("shield", "firewall", "authn", "replay", "ratelimit", "authz", "risk", "fraud", "forward")
MAX_RECORDED_PATH = 512

log = structlog.get_logger("bastion.pipeline")


class Stage(Protocol):
    name: ClassVar[str]

    async def __call__(self, ctx: RequestContext) -> Verdict: ...


Observer = Callable[[RequestContext, Verdict], None]
"""Sees every request's verdict before its entry is built: it may add to ``ctx.outcome``
(recorded in the entry) and to ``ctx.recorded`` (called with the entry's index once durable)."""


class StageTimer(Protocol):
    def stage_done(self, stage: str, seconds: float) -> None: ...

    def request_done(self, ctx: RequestContext, verdict: Verdict, seconds: float) -> None: ...


def build_stages(
    *,
    keys: KeyStore,
    nonces: NonceStore,
    orders: OrderStore,
    venue: Venue,
    ledger: Ledger,
    clock: Clock,
    replay_window_seconds: int,
    venue_timeout_seconds: float,
    risk: RiskEngine,
    policies: PolicyCache,
    trading_states: TradingStates,
    shield: Shield,
    ratelimit: RateLimit,
    proofs: LedgerProofs | None = None,
    key_secrets: KeySecrets | None = None,
    key_usage: KeyUsage | None = None,
    fraud: FraudCheck,
) -> tuple[Stage, ...]:
    """The production chain, in :data:`STAGE_ORDER`."""
    stages: tuple[Stage, ...] = (
        shield,
        Firewall(),
        Authenticate(keys, clock, key_secrets, key_usage),
        ReplayGuard(nonces, clock, replay_window_seconds),
        ratelimit,
        Authorize(orders, policies),
        RiskCheck(risk, policies, trading_states, orders, clock),
        fraud,
        Forward(orders, venue, ledger, clock, venue_timeout_seconds, proofs),
    )
    assert tuple(s.name for s in stages) == STAGE_ORDER  # noqa: S101 - guards the declaration above  # nosec B101
    return stages


def request_digest(ctx: RequestContext) -> str:
    """SHA-256 over method, target and body: identifies the request in the ledger."""
    digest = hashlib.sha256()
    for part in (ctx.method.encode(), ctx.path.encode(), ctx.query.encode()):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(ctx.body)
    return digest.hexdigest()


class Pipeline:
    def __init__(
        self,
        stages: Sequence[Stage],
        ledger: Ledger,
        personal: SubjectKeys | None = None,
        *,
        observers: Sequence[Observer] = (),
        timer: StageTimer | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least its forward stage")
        if (timer is None) != (clock is None):
            raise ValueError("a stage timer needs a monotonic clock, and a clock a timer")
        self.stages = tuple(stages)
        self._ledger = ledger
        self._personal = personal  # seals the client's address in entries, per subject
        self._observers = tuple(observers)
        self._timer = timer
        self._monotonic = clock

    async def run(self, ctx: RequestContext) -> Verdict:
        verdict: Verdict = ALLOW
        current = self.stages[0].name
        timer, monotonic = self._timer, self._monotonic
        started = last = monotonic() if monotonic is not None else 0.0
        try:
            for stage in self.stages:
                current = stage.name
                verdict = await stage(ctx)
                if timer is not None and monotonic is not None:
                    now = monotonic()
                    timer.stage_done(current, now - last)
                    last = now
                if not isinstance(verdict, Allow):
                    break
        except Exception as exc:  # fail closed; the detail goes to the log and the ledger
            log.exception("stage_failed", stage=current, request_id=ctx.request_id)
            verdict = Deny(current, ErrorCode.INTERNAL_ERROR, f"stage raised {type(exc).__name__}")
        for finalize in ctx.finalizers:
            try:
                finalize(verdict)
            except Exception:  # a clean-up that fails must not cost the request its ledger entry
                log.exception("finalizer_failed", request_id=ctx.request_id)
        for observe in self._observers:
            try:
                observe(ctx, verdict)
            except Exception:  # an observer that fails must not cost the request its ledger entry
                log.exception("observer_failed", request_id=ctx.request_id)
        # The request's entry joins any writes the stages queued; one commit usually takes them all,
        # and nothing is answered until every one of them is durable.
        data = self._entry(ctx, verdict)
        if self._personal is not None:
            # personal data leaves only sealed under its subject's key (crypto-shredding)
            principal = ctx.principal
            subject = f"account:{principal.account}" if principal else f"anon:{ctx.received_at.date()}"
            data["subject"] = subject
            try:
                key = await self._personal.key(subject, ctx.received_at)
                data["client_ip"] = self._personal.seal(key, subject, "client_ip", ctx.client_ip)
            except Exception:  # the verdict is recorded all the same, without the address
                log.exception("personal_data_key_failed", request_id=ctx.request_id)
                data["client_ip"] = "[unavailable]"
        entry = self._ledger.enqueue("request", data)
        written = await asyncio.gather(*ctx.pending, entry)
        index = written[-1]
        for callback in ctx.recorded:
            try:
                callback(index)
            except Exception:
                log.exception("recorded_callback_failed", request_id=ctx.request_id)
        if isinstance(verdict, Allow) and ctx.route.name in _RECEIPTED:
            try:
                ctx.receipt = await self._ledger.receipt(index)
            except Exception:  # the order stands and is recorded; a retry returns it with a receipt
                log.exception("receipt_failed", request_id=ctx.request_id)
        if timer is not None and monotonic is not None:
            timer.request_done(ctx, verdict, monotonic() - started)
        return verdict

    @staticmethod
    def _entry(ctx: RequestContext, verdict: Verdict) -> dict[str, object]:
        principal = ctx.principal
        signature = ctx.signature
        entry: dict[str, object] = {
            "request_id": ctx.request_id,
            "route": ctx.route.name,
            "method": ctx.method,
            "path": ctx.path[:MAX_RECORDED_PATH],  # the firewall has not bounded it on every denial
            "client_ip": ctx.client_ip,
            "request_digest": request_digest(ctx),
            "key_id": principal.key_id if principal else None,
            "account": principal.account if principal else None,
        }
        if principal is None and signature is not None:
            entry["claimed_key_id"] = signature.keyid[:64]
        if signature is not None:
            recorded: dict[str, object] = {
                "created": signature.created,
                "nonce": signature.nonce,
                "components": list(signature.components),
            }
            if ctx.signature_base is not None and principal is not None:
                # Non-repudiation (issue 7): the exact base an Ed25519 key signed, and its
                # signature; anyone with the key's public half can check it, the key's owner
                # cannot deny it.  (An HMAC signature proves nothing Bastion could not forge.)
                recorded["base"] = base64.b64encode(ctx.signature_base).decode()
                recorded["value"] = base64.b64encode(signature.signature).decode()
            entry["signature"] = recorded
        if isinstance(verdict, Allow):
            entry["verdict"] = "allow"
            entry["status"] = ctx.status
        elif isinstance(verdict, Deny):
            entry.update(verdict="deny", stage=verdict.stage, code=verdict.code.value, reason=verdict.reason)
        elif isinstance(verdict, Hold):
            entry.update(verdict="hold", stage=verdict.stage, reason=verdict.reason, hold_id=verdict.hold_id)
        if ctx.outcome:
            entry["outcome"] = dict(ctx.outcome)
        return entry
