"""Shield stage: the first stage, before any parsing or signature work.

What the connection layer (``http/protocol.py``) cannot see, this stage decides per request:

1. **bans**: an address banned for repeated authentication failures gets ``429 BANNED``;
   an address locked out of the key id it names (the key is under attack and this address
   has not used it successfully) gets the same, before any signature is verified;
2. **load shedding**: with ``max_in_flight`` requests in the pipeline, reads are shed past
   half of it, new orders past 80 %, cancels only at the limit itself (``503 OVERLOADED``
   with ``Retry-After``); health checks never enter the pipeline and are never shed;
3. **per-address rate**: a token bucket per client address (``429 RATE_LIMITED``);
4. **slow bodies**: a body not received within ``body_timeout_seconds`` is ``408``.

Its finalizer counts the request's outcome: an authentication failure may start a ban
(recorded in the ledger with the request), a success marks the address as one the key is
used from.  Ended bans are recorded by :meth:`Shield.sweep`, which the server calls every
second.
"""

from __future__ import annotations

import re
from typing import ClassVar

from bastion.config import ShieldSettings
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, Ledger
from bastion.state.bans import Ban, BanBook
from bastion.state.buckets import TokenBucket, new_bucket

_KEYID = re.compile(r'keyid="(bst_[0-9A-Za-z]{30})"')
_MAX_BUCKETS = 200_000
MAX_CLAIMED = 4  # a request naming more key ids than this is refused outright
# Shedding order: reads first, new orders next, cancels last (ARCHITECTURE §1, API4).
_SHED_AT = {"cancel_order": 1.0, "place_order": 0.8}
_READS_SHED_AT = 0.5


def claimed_key_ids(ctx: RequestContext) -> list[str]:
    """Every key id a request names anywhere in its Signature-Input lines, peeked without
    parsing them (authn parses and checks them properly).  All of them: a decoy parameter,
    padding or a second member must not let a request past a locked key it also names."""
    found: list[str] = []
    for value in ctx.headers.get("signature-input", ()):
        for key_id in _KEYID.findall(value):
            if key_id not in found:
                found.append(key_id)
    return found


def claimed_key_id(ctx: RequestContext) -> str | None:
    """The first key id a request names (see :func:`claimed_key_ids`)."""
    found = claimed_key_ids(ctx)
    return found[0] if found else None


def _ceil(seconds: float) -> int:
    return max(1, int(seconds) + (seconds % 1 > 0))


class Shield:
    name: ClassVar[str] = "shield"

    def __init__(self, settings: ShieldSettings, clock: Clock, ledger: Ledger) -> None:
        self._settings = settings
        self._clock = clock
        self._ledger = ledger
        self.bans = BanBook(
            ban_after=settings.ban_after_failures,
            key_after=settings.key_lockout_after_failures,
            window=settings.failure_window_seconds,
            base=settings.ban_seconds,
            maximum=settings.max_ban_seconds,
        )
        self._buckets: dict[str, TokenBucket] = {}
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, ctx: RequestContext) -> Verdict:
        now = self._clock.now().timestamp()
        address = ctx.client_ip
        banned = self.bans.address_banned(address, now)
        if banned:
            return Deny(self.name, ErrorCode.BANNED, "address banned", retry_after=_ceil(banned))
        claimed = claimed_key_ids(ctx)
        for key_id in claimed[:MAX_CLAIMED]:
            locked = self.bans.key_locked(key_id, address, now)
            if locked:
                reason = f"key {key_id} is locked against addresses it was not used from"
                return Deny(self.name, ErrorCode.BANNED, reason, retry_after=_ceil(locked))
        if len(claimed) > MAX_CLAIMED:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, f"{len(claimed)} key ids named")
        limit = self._settings.max_in_flight * _SHED_AT.get(ctx.route.name, _READS_SHED_AT)
        if self.in_flight >= limit:
            self.shed += 1
            return Deny(self.name, ErrorCode.OVERLOADED, f"shed at {self.in_flight} in flight", retry_after=1)
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[address] = new_bucket(
                self._settings.ip_requests_per_second, now, float(self._settings.ip_burst)
            )
        if not bucket.available(now):
            wait = bucket.wait(now)
            return Deny(
                self.name, ErrorCode.RATE_LIMITED, "address over its request rate", retry_after=_ceil(wait)
            )
        bucket.take(now)
        if ctx.body_timed_out:
            return Deny(self.name, ErrorCode.REQUEST_TIMEOUT, "body not received in time")
        self.in_flight += 1
        ctx.finalizers.append(lambda verdict: self._settle(ctx, claimed, verdict))
        return ALLOW

    def _settle(self, ctx: RequestContext, claimed: list[str], verdict: Verdict) -> None:
        self.in_flight -= 1
        now = self._clock.now().timestamp()
        if isinstance(verdict, Deny) and verdict.code is ErrorCode.AUTHENTICATION_FAILED:
            # the failure counts against the key authn parsed out of the header, else the first named
            parsed = ctx.signature.keyid if ctx.signature is not None else None
            first = claimed[0] if claimed else None
            key_id = parsed if parsed is not None and parsed.startswith("bst_") else first
            for ban in self.bans.failure(ctx.client_ip, key_id, now):
                ctx.pending.append(self._ledger.enqueue("shield.banned", _facts(ban)))
        elif ctx.principal is not None:
            self.bans.success(ctx.client_ip, ctx.principal.key_id, now)

    def sweep(self) -> list[Ban]:
        """Bans that ended since the last call (to be recorded)."""
        return self.bans.sweep(self._clock.now().timestamp())


def _facts(ban: Ban) -> dict[str, object]:
    return {
        "kind": ban.kind,
        "subject": ban.subject[:128],
        "seconds": ban.seconds,
        "until": ban.until,
        "offence": ban.offence,
    }


def ended_facts(ban: Ban) -> dict[str, object]:
    return {"kind": ban.kind, "subject": ban.subject[:128], "ended": ban.until, "offence": ban.offence}
