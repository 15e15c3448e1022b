from __future__ import annotations

from typing import ClassVar

import pytest

from bastion.clock import FakeClock
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode, LedgerError
from bastion.pipeline.chain import STAGE_ORDER, Pipeline, build_stages
from bastion.pipeline.context import RequestContext
from bastion.state.memory import MemoryNonceStore
from bastion.store.memory import MemoryKeyStore, MemoryLedger, MemoryOrderStore
from tests.pipeline.test_forward import Rig
from tests.support import Req, context, risk_parts


def test_the_declared_order_is_cheapest_first() -> None:
    assert STAGE_ORDER == (
        "shield",
        "firewall",
        "authn",
        "replay",
        "ratelimit",
        "authz",
        "risk",
        "fraud",
        "forward",
    )
    rig = Rig()
    stages = build_stages(
        keys=MemoryKeyStore(),
        nonces=MemoryNonceStore(),
        orders=MemoryOrderStore(),
        venue=rig.venue,
        ledger=rig.ledger,
        clock=rig.clock,
        replay_window_seconds=5,
        venue_timeout_seconds=5,
        **risk_parts(rig.venue.inner),
    )
    assert tuple(s.name for s in stages) == STAGE_ORDER


class Boom:
    name: ClassVar[str] = "boom"

    async def __call__(self, ctx: RequestContext) -> Verdict:
        raise RuntimeError("secret detail")


class Never:
    name: ClassVar[str] = "never"
    called = False

    async def __call__(self, ctx: RequestContext) -> Verdict:
        Never.called = True
        return ALLOW


async def test_a_failing_stage_denies_and_is_recorded() -> None:
    ledger = MemoryLedger()
    verdict = await Pipeline((Boom(), Never()), ledger).run(context(Req("get_account"), FakeClock()))
    assert isinstance(verdict, Deny)
    assert (verdict.stage, verdict.code) == ("boom", ErrorCode.INTERNAL_ERROR)
    assert not Never.called
    kind, entry = ledger.entries[-1]
    assert kind == "request" and entry["verdict"] == "deny" and entry["stage"] == "boom"


async def test_denials_are_recorded_with_stage_and_reason() -> None:
    ledger = MemoryLedger()
    clock = FakeClock()
    stages = build_stages(
        keys=MemoryKeyStore(),
        nonces=MemoryNonceStore(),
        orders=MemoryOrderStore(),
        venue=Rig().venue,
        ledger=ledger,
        clock=clock,
        replay_window_seconds=5,
        venue_timeout_seconds=5,
        **risk_parts(Rig().venue.inner),
    )
    verdict = await Pipeline(stages, ledger).run(context(Req("get_account"), clock))
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.AUTHENTICATION_FAILED
    _, entry = ledger.entries[-1]
    assert entry["stage"] == "authn" and entry["reason"] == "missing signature-input header"
    assert entry["code"] == "AUTHENTICATION_FAILED" and len(str(entry["request_digest"])) == 64


async def test_a_ledger_failure_is_not_swallowed() -> None:
    ledger = MemoryLedger()
    ledger.fail = True
    with pytest.raises(LedgerError):
        await Pipeline((Never(),), ledger).run(context(Req("get_account"), FakeClock()))


async def test_recorded_paths_are_bounded() -> None:
    ledger = MemoryLedger()
    ctx = context(Req("get_order", path_params={"id": "x" * 100_000}), FakeClock())
    await Pipeline((Never(),), ledger).run(ctx)
    assert len(str(ledger.entries[-1][1]["path"])) == 512


class Refuse:
    name: ClassVar[str] = "refuse"

    async def __call__(self, ctx: RequestContext) -> Verdict:
        return Deny(self.name, ErrorCode.FORBIDDEN, "no")


async def test_observers_decide_into_the_entry_and_hear_its_index() -> None:
    """An observer runs before the entry is built: what it adds to the outcome is recorded
    with the verdict it saw, and its callbacks get the entry's index once it is durable."""
    ledger = MemoryLedger()
    heard: list[tuple[str, int]] = []

    def observer(ctx: RequestContext, verdict: Verdict) -> None:
        assert isinstance(verdict, Deny)
        ctx.outcome["seen"] = verdict.code.value
        ctx.recorded.append(lambda index: heard.append((verdict.stage, index)))

    def broken(ctx: RequestContext, verdict: Verdict) -> None:
        raise RuntimeError("observer bug")

    pipeline = Pipeline((Refuse(),), ledger, observers=(broken, observer))
    await pipeline.run(context(Req("get_account"), FakeClock()))
    await pipeline.run(context(Req("get_account"), FakeClock()))
    assert [e["outcome"] for _, e in ledger.entries] == [{"seen": "FORBIDDEN"}] * 2
    assert heard == [("refuse", 0), ("refuse", 1)]  # each request's own entry
