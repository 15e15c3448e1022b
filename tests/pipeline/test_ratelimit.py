"""The rate-limiting stage: three rules, weights, headers, the policy's limit, failing closed."""

from __future__ import annotations

from collections.abc import Sequence

from bastion.clock import FakeClock
from bastion.config import RateLimitSettings
from bastion.domain.policy import document_from
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.pipeline.ratelimit import RateLimit
from bastion.state.policies import PolicyCache, key_subject
from bastion.state.ratelimit import MemoryRateStore, RateDecision, RateRule, RateStoreUnavailable
from tests.support import Req, context

SETTINGS = RateLimitSettings(key_per_second=1, key_burst=3, account_per_second=100, account_burst=100)


class DownStore:
    async def hit(self, rules: Sequence[RateRule], cost: int) -> RateDecision:
        raise RateStoreUnavailable("down")


def stage(policies: PolicyCache | None = None, store: object = None) -> tuple[RateLimit, FakeClock]:
    clock = FakeClock()
    return (
        RateLimit(
            store or MemoryRateStore(clock), MemoryRateStore(clock), policies or PolicyCache(), SETTINGS
        ),  # type: ignore[arg-type]
        clock,
    )


def request(clock: FakeClock, route: str = "get_order", key: str = "bst_k") -> RequestContext:
    ctx = context(Req(route, path_params={"id": "ord_" + "a" * 24} if "order" in route else {}), clock)
    ctx.principal = Principal(key, "alice", frozenset(Scope))
    return ctx


async def test_the_key_default_applies_with_headers_and_retry_after() -> None:
    limit, clock = stage()
    contexts = [request(clock) for _ in range(4)]
    verdicts = [await limit(ctx) for ctx in contexts]
    assert [isinstance(v, Allow) for v in verdicts] == [True, True, True, False]
    assert contexts[0].response_headers == {
        "ratelimit-limit": "3",
        "ratelimit-remaining": "2",
        "ratelimit-reset": "1",
    }
    refused = verdicts[3]
    assert isinstance(refused, Deny) and refused.code is ErrorCode.RATE_LIMITED and refused.retry_after == 1
    assert contexts[3].response_headers["ratelimit-remaining"] == "0"
    assert isinstance(await limit(request(clock, key="bst_other")), Allow)  # per key


async def test_a_listing_weighs_more() -> None:
    limit, clock = stage()
    refused = await limit(request(clock, "list_orders"))  # weight 5 > burst 3
    assert isinstance(refused, Deny) and refused.code is ErrorCode.RATE_LIMITED


async def test_the_policy_sets_the_key_limit() -> None:
    policies = PolicyCache(
        {key_subject("bst_k"): (1, document_from({"rate_limit": {"per_second": "10", "burst": 20}}))}
    )
    limit, clock = stage(policies)
    verdicts = [await limit(request(clock)) for _ in range(20)]
    assert all(isinstance(v, Allow) for v in verdicts)
    assert isinstance(await limit(request(clock)), Deny)


async def test_an_unreachable_store_fails_closed_except_for_cancels() -> None:
    limit, clock = stage(store=DownStore())
    refused = await limit(request(clock, "place_order"))
    assert isinstance(refused, Deny) and refused.code is ErrorCode.RATE_LIMITER_UNAVAILABLE
    assert isinstance(await limit(request(clock, "get_account")), Deny)
    cancels = [await limit(request(clock, "cancel_order")) for _ in range(4)]
    assert [isinstance(v, Allow) for v in cancels] == [True, True, True, False]  # still limited, locally
