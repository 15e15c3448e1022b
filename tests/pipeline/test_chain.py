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
