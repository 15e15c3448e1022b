"""Last use of each key, kept in memory on the request path and written in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import structlog

log = structlog.get_logger("bastion.usage")


class KeyUsageRecorder:
    """The ``KeyUsage`` port: ``touch`` is a dict write; ``flush`` hands the batch to ``sink``."""

    def __init__(
        self, sink: Callable[[Mapping[str, tuple[datetime, str]]], Awaitable[None]], interval: float = 2.0
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._sink = sink
        self._interval = interval
        self._pending: dict[str, tuple[datetime, str]] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(self, key_id: str, ip: str, when: datetime) -> None:
        self._pending[key_id] = (when, ip)

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        if batch:
            await self._sink(batch)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="key-usage")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # last use is informational: log, keep serving
                log.exception("key_usage_flush_failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
