"""Replay stage: a signature is fresh (``created`` within the window) and its nonce is new.

A nonce is remembered per key until its signature could no longer be fresh, so memory is
bounded by the request rate times the window.
"""

from __future__ import annotations

from typing import ClassVar

from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ConfigError, ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, NonceStore

MAX_WINDOW_SECONDS = 60


def _deny(reason: str) -> Deny:
    return Deny("replay", ErrorCode.AUTHENTICATION_FAILED, reason)


class ReplayGuard:
    name: ClassVar[str] = "replay"

    def __init__(self, nonces: NonceStore, clock: Clock, window_seconds: int = 5) -> None:
        if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
            raise ConfigError(f"replay window must be 1..{MAX_WINDOW_SECONDS} seconds")
        self._nonces = nonces
        self._clock = clock
        self._window = window_seconds

    async def __call__(self, ctx: RequestContext) -> Verdict:
        signature = ctx.signature
        if signature is None or ctx.principal is None:
            return _deny("no authenticated signature to check")
        now = self._clock.now().timestamp()
        age = now - signature.created
        if age > self._window:
            return _deny(f"created is {age:.0f}s old (window {self._window}s)")
        if age < -self._window:
            return _deny(f"created is {-age:.0f}s in the future (window {self._window}s)")
        fresh = await self._nonces.claim(
            ctx.principal.key_id, signature.nonce, now=now, expires_at=signature.created + self._window + 1
        )
        if not fresh:
            return _deny("nonce already used")
        return ALLOW
