"""Benchmark servers on plain HTTP, loopback only.  Bench-only wiring: nothing here is reachable
from Bastion's settings or CLI.

    python bench/_server.py HOME PORT MODE [STATS_FILE]

MODE G: the full gateway, as `bastion serve` builds it.
MODE P: a bare pass-through on the same stack: same server, routing, request reading,
        response encoding and paper venue, but no stages and no ledger.
MODE T: the full gateway with every stage and ledger append timed in process CPU
        (meaningful at concurrency 1); figures go to STATS_FILE at shutdown.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import ClassVar, cast

import msgspec
from starlette.types import ASGIApp

from bastion import logs
from bastion.config import load_settings
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.http.app import create_app
from bastion.pipeline.chain import Pipeline, Stage
from bastion.pipeline.context import RequestContext
from bastion.pipeline.firewall import to_order_request
from bastion.ports import Ledger, OrderRecord, OrderState, RowWrite
from bastion.schema import PlaceOrder
from bastion.server import run, services_lifespan
from bastion.services import Services

CPU: dict[str, list[int]] = defaultdict(list)


class NullLedger:
    async def append(self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None) -> int:
        return 0

    def enqueue(
        self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None
    ) -> Awaitable[int]:
        return self.append(kind, data)

    async def receipt(self, index: int) -> dict[str, object] | None:
        return None  # P keeps no ledger, so it gives no receipts


class PassThrough:
    """Decode the body, call the venue, answer: the least any proxy to the venue must do."""

    name: ClassVar[str] = "passthrough"

    def __init__(self, services: Services, account: str) -> None:
        self._venue = services.venue
        self._clock = services.clock
        self._principal = Principal("bst_bench", account, frozenset(Scope))

    async def __call__(self, ctx: RequestContext) -> Verdict:
        ctx.principal = self._principal
        if ctx.route.name != "place_order":
            return Deny(self.name, ErrorCode.NOT_FOUND, "the pass-through serves orders only")
        try:
            request = to_order_request(msgspec.json.decode(ctx.body, type=PlaceOrder))
        except msgspec.ValidationError:
            return Deny(self.name, ErrorCode.BAD_REQUEST, "bad body")
        if isinstance(request, str):
            return Deny(self.name, ErrorCode.BAD_REQUEST, request)
        placed = await self._venue.place(self._principal.account, request)
        now = self._clock.now()
        ctx.result = OrderRecord(
            "ord_" + "0" * 24,
            self._principal.account,
            "bst_bench",
            request,
            "",
            OrderState.PLACED,
            now,
            now,
            placed.venue_order_id,
            None,
            placed,
        )
        ctx.status = 201
        return ALLOW


class Timed:
    """A stage wrapped to record the CPU time it used: the whole process's (which includes
    whatever other threads, SQLite's writer among them, did meanwhile) and the event loop
    thread's alone (the stage's own work, as it cannot run anywhere else)."""

    def __init__(self, inner: Stage) -> None:
        self.inner = inner
        self.name = inner.name

    async def __call__(self, ctx: RequestContext) -> Verdict:
        start = time.process_time_ns()
        own = time.thread_time_ns()
        try:
            return await self.inner(ctx)
        finally:
            CPU[self.name].append(time.process_time_ns() - start)
            CPU[self.name + " (loop thread)"].append(time.thread_time_ns() - own)


class TimedLedger:
    """Times what appending costs the caller (queued entries are timed by their waiter)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner

    async def append(self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None) -> int:
        start = time.process_time_ns()
        try:
            return await self.inner.append(kind, data, write=write)
        finally:
            CPU["ledger " + kind].append(time.process_time_ns() - start)

    def enqueue(
        self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None
    ) -> Awaitable[int]:
        return self._timed(kind, self.inner.enqueue(kind, data, write=write))

    async def receipt(self, index: int) -> dict[str, object] | None:
        start = time.process_time_ns()
        try:
            return await self.inner.receipt(index)
        finally:
            CPU["ledger receipt"].append(time.process_time_ns() - start)

    async def _timed(self, kind: str, pending: Awaitable[int]) -> int:
        start = time.process_time_ns()
        try:
            return await pending
        finally:
            CPU["ledger " + kind + " (wait)"].append(time.process_time_ns() - start)


def build(services: Services, mode: str, stats_file: Path | None) -> ASGIApp:
    async def write_stats() -> None:
        if stats_file is not None:
            await asyncio.to_thread(stats_file.write_bytes, msgspec.json.encode(dict(CPU)))

    ledger: Ledger = services.ledger
    if mode == "G":
        stages = services.stages()
    elif mode == "P":
        ledger = NullLedger()
        # the risk book, the fraud stage's windows and the metrics are the gateway's, not P's
        for listener in (
            services.on_venue_order,
            services.fraud_engine.on_venue_order,
            services.metrics.on_venue_order,
        ):
            services.venue.unsubscribe(listener)
        stages = (PassThrough(services, "bench"),)
    elif mode == "T":
        ledger = TimedLedger(services.ledger)
        stages = tuple(
            cast(Stage, Timed(s))  # each wrapper carries its stage's name
            for s in Services.stages(_with_ledger(services, ledger))  # the forward stage's appends too
        )
    else:
        raise SystemExit("MODE is G, P or T")
    if mode == "P":
        pipeline = Pipeline(stages, ledger)
    else:  # as the server builds it: the fraud stage's observer and the metrics' timer included
        pipeline = Pipeline(
            stages,
            ledger,
            services.personal,
            observers=(services.fraud_stage().observe,),
            timer=services.metrics,
            clock=time.perf_counter,
        )
    return create_app(
        pipeline=pipeline,
        ledger=ledger,
        clock=services.clock,
        venue_name=services.venue.name,
        max_body_bytes=services.settings.server.max_body_bytes,
        lifespan=services_lifespan(services, write_stats),
    )


def _with_ledger(services: Services, ledger: Ledger) -> Services:
    import dataclasses

    return dataclasses.replace(services, ledger=ledger)  # type: ignore[arg-type]


def main() -> None:
    home, port, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    stats_file = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    settings = load_settings(home)
    logs.configure(settings.log.level, home / settings.log.file)  # as `bastion serve` does
    services = Services.build(home, settings)
    run(
        build(services, mode, stats_file),
        host="127.0.0.1",
        port=port,
        cert=None,
        key=None,
        shield=settings.shield,
        insecure_http=True,
    )


if __name__ == "__main__":
    main()
