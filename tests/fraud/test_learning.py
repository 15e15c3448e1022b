"""A serving process's learning loop: it drains what the stage queued, in slices, letting the
event loop run between them (a backlog must not stall requests)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from typer.testing import CliRunner

from bastion.cli import app
from bastion.config import load_settings
from bastion.fraud.model import Baselines, features
from bastion.services import LEARN_SLICE, Services


class Sliced(Baselines):
    """Records each slice asked for, and whether the loop ran in between."""

    def __init__(self) -> None:
        super().__init__(warmup=1)
        self.slices: list[int] = []
        self.ticks = 0
        self.ticks_at: list[int] = []
        self.drained = asyncio.Event()

    def learn_pending(self, limit: int = 1_000) -> int:
        self.slices.append(limit)
        self.ticks_at.append(self.ticks)
        done = super().learn_pending(limit)
        if not self.pending:
            self.drained.set()
        return done


def test_a_backlog_is_learned_in_slices_with_the_loop_running_between(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert CliRunner().invoke(app, ["init", "--home", str(home)]).exit_code == 0
    asyncio.run(_check(home))


async def _check(home: Path) -> None:
    services = Services.build(home, load_settings(home))
    model = Sliced()
    services.fraud_engine.baselines = model
    backlog = LEARN_SLICE * 5 + 3
    for i in range(backlog):
        model.learn_later(f"k{i % 7}", features(100.0 + i, 100.0, 0.0, 10.0, buy=True))
    stop = asyncio.Event()

    async def ticking() -> None:  # another task: it runs only when the learning loop yields
        while not stop.is_set():
            model.ticks += 1
            await asyncio.sleep(0)

    await services.start()
    ticker = asyncio.create_task(ticking())
    try:
        await services.start_serving()
        await asyncio.wait_for(model.drained.wait(), 10)
    finally:
        stop.set()
        await ticker
        await services.close()
    assert set(model.slices) == {LEARN_SLICE}  # never the whole backlog at once
    busy = model.ticks_at[: backlog // LEARN_SLICE + 1]  # the slices that drained the backlog
    assert all(b > a for a, b in itertools.pairwise(busy))  # the loop ran between them
    assert model.pending == 0
