from __future__ import annotations

import pytest

from bastion.clock import FakeClock
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ConfigError, ErrorCode
from bastion.pipeline.authn import Authenticate
from bastion.pipeline.replay import ReplayGuard
from bastion.state.memory import MemoryNonceStore
from bastion.store.memory import MemoryKeyStore
from tests.support import BotKey, Req, make_key, signed


async def check(ctx: object, key: BotKey, clock: FakeClock, guard: ReplayGuard) -> Allow | Deny:
    assert isinstance(await Authenticate(MemoryKeyStore([key.record]), clock)(ctx), Allow)  # type: ignore[arg-type]
    verdict = await guard(ctx)  # type: ignore[arg-type]
    assert isinstance(verdict, Allow | Deny)
    return verdict


def reason(verdict: Allow | Deny) -> str:
    assert isinstance(verdict, Deny)
    assert (verdict.stage, verdict.code) == ("replay", ErrorCode.AUTHENTICATION_FAILED)
    return verdict.reason


async def test_a_nonce_is_accepted_once() -> None:
    clock = FakeClock()
    key = make_key(clock)
    guard = ReplayGuard(MemoryNonceStore(), clock, window_seconds=5)
    nonce = "n" * 24
    assert isinstance(
        await check(signed(Req("get_account"), key, clock, nonce=nonce), key, clock, guard), Allow
    )
    again = signed(Req("get_account"), key, clock, nonce=nonce)
    assert reason(await check(again, key, clock, guard)) == "nonce already used"


async def test_the_same_nonce_under_another_key_is_independent() -> None:
    clock = FakeClock()
    a, b = make_key(clock), make_key(clock)
    guard = ReplayGuard(MemoryNonceStore(), clock)
    nonce = "m" * 24
    assert isinstance(await check(signed(Req("get_account"), a, clock, nonce=nonce), a, clock, guard), Allow)
    assert isinstance(await check(signed(Req("get_account"), b, clock, nonce=nonce), b, clock, guard), Allow)


@pytest.mark.parametrize(("offset", "allowed"), [(0, True), (-5, True), (-6, False), (5, True), (6, False)])
async def test_created_must_be_within_the_window(offset: int, allowed: bool) -> None:
    clock = FakeClock()
    key = make_key(clock)
    guard = ReplayGuard(MemoryNonceStore(), clock, window_seconds=5)
    created = int(clock.now().timestamp()) + offset
    verdict = await check(signed(Req("get_account"), key, clock, created=created), key, clock, guard)
    assert isinstance(verdict, Allow) is allowed


async def test_nonces_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    store = MemoryNonceStore()
    now = clock.now().timestamp()
    assert await store.claim("k", "n1", now=now, expires_at=now + 6)
    assert not await store.claim("k", "n1", now=now + 5, expires_at=now + 11)
    assert await store.claim("k", "n2", now=now + 7, expires_at=now + 13)
    assert len(store) == 1  # n1 swept


async def test_a_full_nonce_store_fails_closed() -> None:
    store = MemoryNonceStore(max_entries=2)
    assert await store.claim("k", "a", now=0, expires_at=10)
    assert await store.claim("k", "b", now=0, expires_at=10)
    assert not await store.claim("k", "c", now=0, expires_at=10)


def test_window_is_bounded() -> None:
    for window in (0, 61):
        with pytest.raises(ConfigError):
            ReplayGuard(MemoryNonceStore(), FakeClock(), window_seconds=window)
