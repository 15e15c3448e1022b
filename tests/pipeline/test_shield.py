"""The shield stage alone: bans, shedding by priority, per-address rate, slow bodies."""

from __future__ import annotations

import asyncio

import pytest

from bastion.clock import FakeClock
from bastion.config import ShieldSettings
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import ALLOW, Allow, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.chain import Pipeline
from bastion.pipeline.context import RequestContext
from bastion.pipeline.shield import Shield
from bastion.store.memory import MemoryLedger
from tests.support import Req, context, order_body


def shield(**settings: object) -> tuple[Shield, FakeClock, MemoryLedger]:
    clock, ledger = FakeClock(), MemoryLedger()
    base = {"ban_after_failures": 3, "ban_seconds": 10.0, "ip_requests_per_second": 5.0, "ip_burst": 5}
    return Shield(ShieldSettings(**(base | settings)), clock, ledger), clock, ledger  # type: ignore[arg-type]


class Outcome:
    """A stand-in for the rest of the chain: authentication fails or succeeds."""

    name = "authn"

    def __init__(self, ok: bool) -> None:
        self.ok = ok

    async def __call__(self, ctx: RequestContext) -> Verdict:
        if self.ok:
            ctx.principal = Principal("bst_k", "alice", frozenset(Scope))
            return ALLOW
        return Deny("authn", ErrorCode.AUTHENTICATION_FAILED, "bad signature")


def request(clock: FakeClock, ip: str = "198.51.100.1", route: str = "get_account") -> RequestContext:
    ctx = context(Req(route, order_body() if route == "place_order" else None), clock)
    ctx.client_ip = ip
    return ctx


async def test_failures_ban_the_address_and_the_ban_is_recorded() -> None:
    stage, clock, ledger = shield()
    pipeline = Pipeline((stage, Outcome(False)), ledger)
    for _ in range(3):
        verdict = await pipeline.run(request(clock))
        assert isinstance(verdict, Deny) and verdict.code is ErrorCode.AUTHENTICATION_FAILED
    banned = await pipeline.run(request(clock))
    assert isinstance(banned, Deny) and (banned.code, banned.retry_after) == (ErrorCode.BANNED, 10)
    kinds = ledger.kinds()
    assert kinds.count("shield.banned") == 1 and kinds.index("shield.banned") < len(kinds) - 1
    other = await Pipeline((stage, Outcome(True)), ledger).run(request(clock, "198.51.100.2"))
    assert isinstance(other, Allow)  # other addresses are unaffected
    clock.advance(10)
    assert isinstance(await Pipeline((stage, Outcome(True)), ledger).run(request(clock)), Allow)
    (ended,) = stage.sweep()
    assert ended.subject == "198.51.100.1"


async def test_the_address_rate_is_a_token_bucket() -> None:
    stage, clock, _ = shield()
    verdicts = [await stage(request(clock)) for _ in range(6)]
    assert all(isinstance(v, Allow) for v in verdicts[:5])
    limited = verdicts[5]
    assert isinstance(limited, Deny) and limited.code is ErrorCode.RATE_LIMITED and limited.retry_after == 1
    assert isinstance(await stage(request(clock, "198.51.100.9")), Allow)
    clock.advance(0.2)
    assert isinstance(await stage(request(clock)), Allow)


@pytest.mark.parametrize(
    ("route", "in_flight", "shed"),
    [
        ("get_account", 127, False),
        ("get_account", 128, True),  # reads go first, at half of max_in_flight (256)
        ("place_order", 204, False),
        ("place_order", 205, True),  # new orders at 80 %
        ("cancel_order", 255, False),
        ("cancel_order", 256, True),  # cancels only at the limit itself
    ],
)
async def test_shedding_goes_by_priority(route: str, in_flight: int, shed: bool) -> None:
    stage, clock, _ = shield(ip_requests_per_second=1e6, ip_burst=10**6)
    stage.in_flight = in_flight
    ctx = request(clock, route=route)
    if route == "cancel_order":
        ctx.path_params = {"id": "ord_" + "a" * 24}
    verdict = await stage(ctx)
    if shed:
        assert isinstance(verdict, Deny) and verdict.code is ErrorCode.OVERLOADED and verdict.retry_after == 1
    else:
        assert isinstance(verdict, Allow)


async def test_in_flight_counts_requests_until_they_end() -> None:
    stage, clock, ledger = shield()
    gate = asyncio.Event()

    class Slow:
        name = "slow"

        async def __call__(self, ctx: RequestContext) -> Verdict:
            await gate.wait()
            return ALLOW

    pipeline = Pipeline((stage, Slow()), ledger)
    tasks = [asyncio.create_task(pipeline.run(request(clock, f"10.0.0.{n}"))) for n in range(3)]
    await asyncio.sleep(0)
    assert stage.in_flight == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert stage.in_flight == 0


async def test_a_slow_body_is_408() -> None:
    stage, clock, _ = shield()
    ctx = request(clock)
    ctx.body_timed_out = True
    verdict = await stage(ctx)
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.REQUEST_TIMEOUT
