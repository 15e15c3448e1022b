"""Rate-limiting stage: per key, per account and per client address, after authentication.

Each route has a weight (a listing costs more than reading one order).  The key's limit is
its policy's ``rate_limit`` (``{"per_second": "…", "burst": …}``), or the settings' default;
the account's and the address's come from the settings.  The three are checked and charged
atomically in one call to the :class:`~bastion.state.ratelimit.RateStore` (one round trip
when it is Redis).  Every answer carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (the IETF httpapi draft's fields) for the tightest of the three; a
refusal is ``429 RATE_LIMITED`` with ``Retry-After``.

When the shared store is unreachable the stage never stops limiting: new orders and reads
are refused (``503 RATE_LIMITER_UNAVAILABLE``, and ``/healthz`` says so), and cancels, which
only reduce risk, are limited by this process alone until the store is back.
"""

from __future__ import annotations

import math
from typing import ClassVar

from bastion.config import RateLimitSettings
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.state.policies import PolicyCache
from bastion.state.ratelimit import MemoryRateStore, RateDecision, RateRule, RateStore, RateStoreUnavailable


class RateLimit:
    name: ClassVar[str] = "ratelimit"

    def __init__(
        self,
        store: RateStore,
        fallback: MemoryRateStore,
        policies: PolicyCache,
        settings: RateLimitSettings,
    ) -> None:
        self._store = store
        self._fallback = fallback
        self._policies = policies
        self._settings = settings

    async def __call__(self, ctx: RequestContext) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, "no principal")
        settings = self._settings
        await self._policies.ensure_key(principal.key_id)
        own = self._policies.for_principal(principal).rate_limit
        per_second, burst = own if own is not None else (settings.key_per_second, settings.key_burst)
        rules = (
            RateRule("k:" + principal.key_id, per_second, burst),
            RateRule("a:" + principal.account, settings.account_per_second, settings.account_burst),
            RateRule("i:" + ctx.client_ip, settings.ip_per_second, settings.ip_burst),
        )
        cost = ctx.route.weight
        try:
            decision = await self._store.hit(rules, cost)
        except RateStoreUnavailable:
            if ctx.route.name != "cancel_order":
                return Deny(
                    self.name,
                    ErrorCode.RATE_LIMITER_UNAVAILABLE,
                    "rate-limit store unreachable",
                    retry_after=1,
                )
            decision = self._fallback.hit_now(rules, cost)  # cancels: limited here alone, never unlimited
            ctx.outcome["ratelimit"] = "local fallback"
        _headers(ctx, decision)
        if not decision.allowed:
            retry = max(1, math.ceil(decision.retry_after))
            return Deny(
                self.name, ErrorCode.RATE_LIMITED, f"over the limit of {decision.bucket}", retry_after=retry
            )
        return ALLOW


def _headers(ctx: RequestContext, decision: RateDecision) -> None:
    ctx.response_headers["ratelimit-limit"] = str(decision.limit)
    ctx.response_headers["ratelimit-remaining"] = str(decision.remaining)
    ctx.response_headers["ratelimit-reset"] = str(max(0, math.ceil(decision.reset)))
