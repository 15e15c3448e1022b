"""The single ledger writer: appends are queued and committed in batches.

``append`` returns only after the batch holding the entry is committed, so a caller that
acknowledges after ``append`` acknowledges only what is durable.  If a batch fails, every
caller in it gets the exception and the writer stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from bastion.clock import to_us
from bastion.errors import LedgerError
from bastion.ports import Clock, PendingEntry


class LedgerStore(Protocol):
    async def append_batch(self, entries: Sequence[PendingEntry]) -> None:
        """Chain and write ``entries`` after the stored head, in one transaction; set each
        entry's ``index``."""
        ...


_MAX_BATCH = 2000


class LedgerWriter:
    def __init__(self, store: LedgerStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._queue: asyncio.Queue[tuple[PendingEntry, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def append(self, kind: str, data: Mapping[str, object]) -> int:
        if self._task is None:
            raise LedgerError("ledger writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = PendingEntry(kind=kind, data=data, time_us=to_us(self._clock.now()))
        self._queue.put_nowait((entry, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            entries = [entry for entry, _ in batch]
            try:
                await self._store.append_batch(entries)
            except Exception as exc:  # every waiter learns of the failure; the writer lives on
                error = exc if isinstance(exc, LedgerError) else LedgerError(f"ledger write failed: {exc!r}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for entry, future in batch:
                    if not future.done():
                        future.set_result(entry.index)
            finally:
                for _ in batch:
                    self._queue.task_done()
