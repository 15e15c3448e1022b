"""Rate limits as GCRA (the generic cell rate algorithm), in memory or in Redis.

A rule is a bucket name, a rate and a burst.  Each bucket keeps one number, its theoretical
arrival time (TAT): with ``T = 1 / rate`` and ``tau = burst * T``, a request of cost ``c`` at
time ``now`` is allowed when ``max(TAT, now) + c * T - now <= tau``, and then TAT moves there.
One check takes several rules (key, account, address) **atomically**: it is allowed only if
every rule allows it, and only then is any bucket charged.

- :class:`MemoryRateStore`: one process; time from the injected clock.
- :class:`RedisRateStore`: shared by replicas; one ``EVALSHA`` round trip per check, the Lua
  script doing all of it atomically with Redis's own clock (replicas' clocks may differ).
  Any Redis failure raises :class:`RateStoreUnavailable`: the caller decides how to fail
  closed, and the store reports itself unhealthy until a check succeeds again.

GCRA needs no timers and one value per bucket; it was measured against the ``limits``
library in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.errors import BastionError
from bastion.ports import Clock


class RateStoreUnavailable(BastionError):
    """The shared rate-limit store could not be reached; nothing was decided."""


@dataclass(frozen=True, slots=True)
class RateRule:
    bucket: str
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int  # the burst of the tightest rule
    remaining: int  # requests of this cost left in the tightest rule
    reset: float  # seconds until the tightest rule is full again
    retry_after: float  # when refused: seconds until it would be allowed
    bucket: str  # the tightest rule's bucket


class RateStore(Protocol):
    async def hit(self, rules: Sequence[RateRule], cost: int) -> RateDecision: ...


def decide(
    tats: Sequence[float], rules: Sequence[RateRule], cost: int, now: float
) -> tuple[RateDecision, list[float]]:
    """The pure GCRA step for several rules: the decision and the buckets' new TATs."""
    new_tats: list[float] = []
    allowed = True
    retry = 0.0
    tightest: tuple[float, int, float, str] | None = None  # (remaining, limit, reset, bucket)
    for tat, rule in zip(tats, rules, strict=True):
        interval = 1.0 / rule.per_second
        tau = rule.burst * interval
        new_tat = max(tat, now) + cost * interval
        wait = new_tat - now - tau
        if wait > 1e-9:
            allowed = False
            retry = max(retry, wait)
            remaining = 0.0
            reset = max(tat, now) - now
        else:
            remaining = math.floor((tau - (new_tat - now)) / interval + 1e-9)
            reset = new_tat - now
        new_tats.append(new_tat)
        if tightest is None or remaining < tightest[0]:
            tightest = (remaining, rule.burst, reset, rule.bucket)
    assert tightest is not None  # noqa: S101 - rules is never empty (checked by hit)  # nosec B101
    remaining, limit, reset, bucket = tightest
    return RateDecision(allowed, limit, int(remaining), reset, retry, bucket), new_tats


class MemoryRateStore:
    def __init__(self, clock: Clock, max_buckets: int = 500_000) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._max = max_buckets

    async def hit(self, rules: Sequence[RateRule], cost: int) -> RateDecision:
        return self.hit_now(rules, cost)

    def hit_now(self, rules: Sequence[RateRule], cost: int) -> RateDecision:
        if not rules:
            raise ValueError("a rate check needs at least one rule")
        now = self._clock.now().timestamp()
        decision, new_tats = decide([self._tats.get(r.bucket, 0.0) for r in rules], rules, cost, now)
        if decision.allowed:
            if len(self._tats) >= self._max:
                self._prune(now)
            for rule, tat in zip(rules, new_tats, strict=True):
                self._tats[rule.bucket] = tat
        return decision

    def _prune(self, now: float) -> None:
        """Drop buckets that are full again (their TAT is in the past): they hold nothing."""
        for bucket in [b for b, tat in self._tats.items() if tat <= now]:
            del self._tats[bucket]
        while len(self._tats) >= self._max:
            del self._tats[next(iter(self._tats))]


# KEYS: the buckets.  ARGV: cost, then (interval, tau) per bucket.  Returns
# {allowed, tightest index, remaining, reset_ms, retry_ms}; time is Redis's own.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local allowed = 1
local retry = 0
local best, best_remaining, best_reset = 1, nil, 0
local new_tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0')
  local base = math.max(tat, now)
  local new_tat = base + cost * interval
  local wait = new_tat - now - tau
  local remaining, reset
  if wait > 1e-9 then
    allowed = 0
    retry = math.max(retry, wait)
    remaining = 0
    reset = base - now
  else
    remaining = math.floor((tau - (new_tat - now)) / interval + 1e-9)
    reset = new_tat - now
  end
  new_tats[i] = new_tat
  if best_remaining == nil or remaining < best_remaining then
    best, best_remaining, best_reset = i, remaining, reset
  end
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do
    local ttl = math.ceil((new_tats[i] - now) * 1000) + 1000
    redis.call('SET', key, string.format('%.6f', new_tats[i]), 'PX', ttl)
  end
end
return {allowed, best, best_remaining, math.ceil(best_reset * 1000), math.ceil(retry * 1000)}
"""


class RedisRateStore:
    """Needs ``redis.asyncio`` (a dependency); ``url`` like ``redis://127.0.0.1:6379/0``."""

    def __init__(self, url: str, *, timeout: float = 0.25, prefix: str = "bastion:rl:") -> None:
        import redis.asyncio as redis_asyncio

        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("ratelimit.redis_url must be redis://, rediss:// or unix://")
        self._client: Any = redis_asyncio.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._script: Any = self._client.register_script(_SCRIPT)
        self._prefix = prefix
        self.healthy = True
        self.last_error = ""

    async def hit(self, rules: Sequence[RateRule], cost: int) -> RateDecision:
        if not rules:
            raise ValueError("a rate check needs at least one rule")
        args: list[float] = [cost]
        for rule in rules:
            interval = 1.0 / rule.per_second
            args += [interval, rule.burst * interval]
        try:
            allowed, best, remaining, reset_ms, retry_ms = await self._script(
                keys=[self._prefix + r.bucket for r in rules], args=args
            )
        except Exception as exc:  # connection refused, timeout, script error: nothing was decided
            self.healthy = False
            self.last_error = type(exc).__name__
            raise RateStoreUnavailable(f"rate-limit store unreachable: {type(exc).__name__}") from None
        self.healthy = True
        rule = rules[int(best) - 1]
        return RateDecision(
            bool(allowed), rule.burst, int(remaining), int(reset_ms) / 1000, int(retry_ms) / 1000, rule.bucket
        )

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except Exception as exc:
            self.healthy, self.last_error = False, type(exc).__name__
            return False
        self.healthy = True
        return True

    async def close(self) -> None:
        await self._client.aclose()
