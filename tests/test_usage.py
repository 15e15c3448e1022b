from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bastion.clock import FakeClock
from bastion.state.usage import KeyUsageRecorder


async def test_touches_are_batched_and_the_latest_wins() -> None:
    batches: list[dict[str, tuple[datetime, str]]] = []

    async def sink(batch: Mapping[str, tuple[datetime, str]]) -> None:
        batches.append(dict(batch))

    clock = FakeClock()
    recorder = KeyUsageRecorder(sink, interval=60)
    recorder.touch("k1", "127.0.0.1", clock.now())
    clock.advance(1)
    recorder.touch("k1", "127.0.0.2", clock.now())
    recorder.touch("k2", "::1", clock.now())
    await recorder.flush()
    await recorder.flush()  # nothing new: no empty write
    assert batches == [{"k1": (clock.now(), "127.0.0.2"), "k2": (clock.now(), "::1")}]
    recorder.touch("k3", "127.0.0.1", clock.now())
    await recorder.close()  # closing flushes what is left
    assert batches[-1] == {"k3": (clock.now(), "127.0.0.1")}
