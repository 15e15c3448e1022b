"""GCRA in memory and in a real Redis: bursts, refill, weights, several rules at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.clock import FakeClock
from bastion.state.ratelimit import (
    MemoryRateStore,
    RateRule,
    RateStoreUnavailable,
    RedisRateStore,
    decide,
)
from tests.redis_server import redis_server

RULE = RateRule("k:a", per_second=2.0, burst=4)


async def test_a_burst_then_refusal_then_refill() -> None:
    clock = FakeClock()
    store = MemoryRateStore(clock)
    decisions = [await store.hit([RULE], 1) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 4 + [False]
    assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]
    refused = decisions[4]
    assert refused.retry_after == pytest.approx(0.5) and refused.limit == 4
    clock.advance(0.5)
    assert (await store.hit([RULE], 1)).allowed
    assert not (await store.hit([RULE], 1)).allowed


async def test_weights_cost_more() -> None:
    store = MemoryRateStore(FakeClock())
    assert (await store.hit([RULE], 3)).remaining == 1
    refused = await store.hit([RULE], 2)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)


async def test_several_rules_are_charged_together_or_not_at_all() -> None:
    clock = FakeClock()
    store = MemoryRateStore(clock)
    tight = RateRule("a:acct", per_second=1.0, burst=1)
    assert (await store.hit([RULE, tight], 1)).allowed
    refused = await store.hit([RULE, tight], 1)
    assert not refused.allowed and refused.bucket == "a:acct"
    # the refusal charged nothing: the key still has 3 of its 4
    assert (await store.hit([RULE], 1)).remaining == 2


def test_the_tightest_rule_is_reported() -> None:
    decision, _ = decide([0.0, 0.0], [RULE, RateRule("i:x", 100.0, 1000)], 1, 1000.0)
    assert (decision.bucket, decision.limit, decision.remaining) == ("k:a", 4, 3)
    assert decision.reset == pytest.approx(0.5)


async def test_redis_decides_like_memory_and_shares_state(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (url, _):
        one, two = RedisRateStore(url), RedisRateStore(url)  # two replicas
        rule = RateRule("k:shared", per_second=0.01, burst=5)
        results = [await (one if n % 2 else two).hit([rule], 1) for n in range(8)]
        assert [r.allowed for r in results] == [True] * 5 + [False] * 3
        assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
        assert results[-1].retry_after > 50
        other = await one.hit([RateRule("k:other", 0.01, 5)], 1)
        assert other.allowed and other.remaining == 4
        await one.close()
        await two.close()


async def test_concurrent_checks_in_redis_never_exceed_the_burst(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (url, _):
        stores = [RedisRateStore(url) for _ in range(4)]
        rule = RateRule("k:race", per_second=0.01, burst=10)
        results = await asyncio.gather(*(stores[n % 4].hit([rule], 1) for n in range(60)))
        assert sum(r.allowed for r in results) == 10
        for store in stores:
            await store.close()


async def test_an_unreachable_redis_raises_and_reports_unhealthy(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (url, process):
        store = RedisRateStore(url, timeout=0.2)
        assert (await store.hit([RULE], 1)).allowed and store.healthy
        process.terminate()
        process.wait(timeout=10)
        with pytest.raises(RateStoreUnavailable):
            await store.hit([RULE], 1)
        assert not store.healthy and not await store.ping()
        await store.close()


def test_a_bad_url_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="redis"):
        RedisRateStore("http://127.0.0.1:6379")
