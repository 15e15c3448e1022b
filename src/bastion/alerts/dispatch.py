"""The alert dispatcher: takes alerts from the request path without blocking it, suppresses
floods, and delivers each alert to every sink in the background with retries.

- :meth:`AlertDispatcher.submit` never blocks and never raises.  An alert is suppressed as a
  **duplicate** when the same (rule, key_id, action) was accepted less than ``dedupe_seconds``
  ago (suppressed ones do not extend that time, so a condition that persists is reported again
  every ``dedupe_seconds``), and **rate-limited** when ``max_per_window`` alerts of the same
  (rule, key_id) were accepted in the last ``window_seconds`` (a sliding window).  When the
  queue is full the alert is dropped.  Times come from the injected clock; the tables are
  bounded so a flood of distinct keys cannot exhaust memory.
- One worker takes alerts in order and hands each to every sink's own **lane**: a bounded
  queue with its own worker, so each sink gets alerts in order and a slow or dead sink delays
  only itself (a webhook that times out on every try must not hold an e-mail back for
  tens of seconds).  A sink's retryable failure is tried again, up to ``attempts`` tries in
  all, after ``backoff_seconds``, then twice that, and so on (the injected ``sleep`` waits).
  A delivery calls ``on_delivered`` with the latency from the triggering request
  (``alert.time``) to the moment the sink's send returned; a final failure calls
  ``on_failed`` and logs the sink's safe name and the reason.
- :meth:`AlertDispatcher.send_now` delivers at once, bypassing suppression and the queue
  (``bastion alerts test``).

Counters (:meth:`AlertDispatcher.stats`): ``submitted`` counts every call to ``submit``;
``suppressed_duplicate``, ``suppressed_rate`` and ``dropped`` (queue full, or closed) are the
ones not queued; ``delivered`` and ``failed`` count deliveries to single sinks (one alert to
three sinks counts three), and so do the deliveries ``dropped`` because a sink's lane was full
or still held them when the close grace ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from bastion.alerts.alert import Alert
from bastion.alerts.sinks import Sink
from bastion.errors import AlertError, ConfigError
from bastion.ports import Clock

log = structlog.get_logger("bastion.alerts")

_MAX_TRACKED = 10_000
_COUNTERS = ("submitted", "suppressed_duplicate", "suppressed_rate", "dropped", "delivered", "failed")

# An alert's subject is its key, or its account when it names no key (a kill switch on an
# account): two accounts halted one after the other are two alerts, not one.
_DedupeKey = tuple[str, str | None, str | None, str]  # rule, key_id, account, action
_RateKey = tuple[str, str | None, str | None]  # rule, key_id, account
Delivered = Callable[[Alert, str, float], None]
Failed = Callable[[Alert, str, str], None]


def _number(name: str, value: float, *, minimum: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"alerts: {name} must be a finite number")
    if value < minimum or (not inclusive and value == minimum):
        raise ConfigError(f"alerts: {name} must be {'at least' if inclusive else 'more than'} {minimum:g}")
    return float(value)


def _integer(name: str, value: int, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"alerts: {name} must be a whole number, at least {minimum}")
    return value


class AlertDispatcher:
    def __init__(
        self,
        clock: Clock,
        *,
        dedupe_seconds: float = 60,
        max_per_window: int = 5,
        window_seconds: float = 600,
        attempts: int = 4,
        backoff_seconds: float = 0.2,
        queue_size: int = 1000,
        on_delivered: Delivered | None = None,
        on_failed: Failed | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._dedupe = _number("dedupe_seconds", dedupe_seconds, minimum=0)
        self._max_per_window = _integer("max_per_window", max_per_window, minimum=1)
        self._window = _number("window_seconds", window_seconds, minimum=0, inclusive=False)
        self._attempts = _integer("attempts", attempts, minimum=1)
        self._backoff = _number("backoff_seconds", backoff_seconds, minimum=0)
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(
            maxsize=_integer("queue_size", queue_size, minimum=1)
        )
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self._sleep = sleep
        self._sinks: tuple[Sink, ...] = ()
        self._lanes: dict[int, _Lane] = {}  # id(sink) -> its lane, made as alerts reach it
        self._last_seen: dict[_DedupeKey, datetime] = {}
        self._recent: dict[_RateKey, deque[datetime]] = {}
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- configuration ----------------------------------------------------------------------

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    def set_sinks(self, sinks: Sequence[Sink]) -> None:
        """Use ``sinks`` from now on (alerts already being sent keep the old ones); sinks no
        longer in use are closed in the background."""
        new = tuple(sinks)
        kept = {id(s) for s in new}
        removed = [s for s in self._sinks if id(s) not in kept]
        self._sinks = new
        if not removed:
            return
        lanes = [lane for s in removed if (lane := self._lanes.pop(id(s), None)) is not None]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nothing of theirs is open (sessions are made inside the loop)
        task = loop.create_task(self._retire(removed, lanes))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire(self, sinks: Sequence[Sink], lanes: Sequence[_Lane], grace: float = 5.0) -> None:
        """A removed sink: what its lane holds is still sent (within ``grace``), then it is closed."""
        await self._stop_lanes(lanes, grace)
        await _close_all(sinks)

    def stats(self) -> dict[str, int]:
        """The counters (see the module docstring) and ``queued``, the alerts now waiting."""
        waiting = self._queue.qsize() + sum(lane.queue.qsize() for lane in self._lanes.values())
        return {**self._counts, "queued": waiting}

    # --- the request path -------------------------------------------------------------------

    def submit(self, alert: Alert) -> bool:
        """Queue ``alert`` for delivery; False if it was suppressed or dropped.  Never blocks or raises."""
        try:
            return self._submit(alert)
        except Exception:  # the request path must never fail because of an alert
            self._counts["dropped"] += 1
            with contextlib.suppress(Exception):
                log.exception("alert submit failed", rule=getattr(alert, "rule", None))
            return False

    def _submit(self, alert: Alert) -> bool:
        self._counts["submitted"] += 1
        if self._closed:
            self._counts["dropped"] += 1
            return False
        now = self._clock.now()
        dedupe_key = (alert.rule, alert.key_id, alert.account, alert.action)
        last = self._last_seen.get(dedupe_key)
        if last is not None and (now - last).total_seconds() < self._dedupe:
            self._counts["suppressed_duplicate"] += 1
            return False
        rate_key = (alert.rule, alert.key_id, alert.account)
        recent = self._recent.get(rate_key)
        if recent is not None:
            while recent and (now - recent[0]).total_seconds() >= self._window:
                recent.popleft()
            if len(recent) >= self._max_per_window:
                self._counts["suppressed_rate"] += 1
                return False
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._counts["dropped"] += 1
            return False
        self._remember(dedupe_key, rate_key, now)
        return True

    def _remember(self, dedupe_key: _DedupeKey, rate_key: _RateKey, now: datetime) -> None:
        self._last_seen.pop(dedupe_key, None)
        self._last_seen[dedupe_key] = now  # re-inserted: the dict stays ordered oldest first
        recent = self._recent.pop(rate_key, None)
        if recent is None:
            recent = deque()
        recent.append(now)
        self._recent[rate_key] = recent
        if len(self._last_seen) > _MAX_TRACKED:
            self._prune(now)
            while len(self._last_seen) > _MAX_TRACKED:
                del self._last_seen[next(iter(self._last_seen))]
        if len(self._recent) > _MAX_TRACKED:
            self._prune(now)
            while len(self._recent) > _MAX_TRACKED:
                del self._recent[next(iter(self._recent))]

    def _prune(self, now: datetime) -> None:
        stale = [k for k, t in self._last_seen.items() if (now - t).total_seconds() >= self._dedupe]
        for dedupe_key in stale:
            del self._last_seen[dedupe_key]
        idle = [k for k, q in self._recent.items() if (now - q[-1]).total_seconds() >= self._window]
        for rate_key in idle:
            del self._recent[rate_key]

    # --- the worker -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background worker (idempotent)."""
        if self._closed:
            raise AlertError("the alert dispatcher is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="bastion-alerts")

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking alerts, deliver what is queued within ``grace`` seconds (the rest is
        dropped and counted), stop the worker and close every sink."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        worker = self._worker
        if worker is not None and not worker.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._queue.join()  # every queued alert handed to its lanes
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._worker = None
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        lanes = list(self._lanes.values())
        self._lanes.clear()
        left += await self._stop_lanes(lanes, max(0.0, deadline - loop.time()))
        self._counts["dropped"] += left
        if left:
            log.warning("alerts dropped at close", count=left)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await _close_all(self._sinks)

    async def _stop_lanes(self, lanes: Sequence[_Lane], grace: float) -> int:
        """Let ``lanes`` send what they hold for up to ``grace`` seconds, then stop them; how
        many deliveries were left undone (counted as dropped)."""
        if not lanes:
            return 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(lane.queue.join() for lane in lanes))
        left = 0
        for lane in lanes:
            lane.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lane.worker
            while not lane.queue.empty():
                lane.queue.get_nowait()
                left += 1
        return left

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                for sink in self._sinks:
                    self._hand(alert, sink)
            except Exception:  # never let one alert stop the worker
                log.exception("alert hand-off crashed", rule=alert.rule)
            finally:
                self._queue.task_done()

    def _hand(self, alert: Alert, sink: Sink) -> None:
        """Into the sink's lane; a lane full of what a dead sink could not send drops it."""
        lane = self._lanes.get(id(sink))
        if lane is None:
            queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=self._queue.maxsize)
            worker = asyncio.get_running_loop().create_task(
                self._drive(sink, queue), name=f"bastion-alerts-{_safe_name(sink)}"
            )
            lane = self._lanes[id(sink)] = _Lane(queue, worker)
        try:
            lane.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._counts["dropped"] += 1
            log.warning("alert dropped: sink backlog full", sink=_safe_name(sink), rule=alert.rule)

    async def _drive(self, sink: Sink, queue: asyncio.Queue[Alert]) -> None:
        """One sink's lane: its alerts in order, each with its retries."""
        while True:
            alert = await queue.get()
            try:
                await self._deliver(alert, sink)
            except Exception:  # never let one alert stop the lane
                log.exception("alert delivery crashed", rule=alert.rule)
            finally:
                queue.task_done()

    async def send_now(self, alert: Alert) -> list[tuple[str, str | None]]:
        """Send ``alert`` to every sink now, with the same retries; (sink name, error or None)
        for each sink, in order.  Suppression and the queue are bypassed; counters and the
        callbacks are updated as for queued alerts."""
        sinks = self._sinks
        return list(await asyncio.gather(*(self._deliver(alert, sink) for sink in sinks)))

    async def _deliver(self, alert: Alert, sink: Sink) -> tuple[str, str | None]:
        """Send to one sink with retries; never raises (except cancellation)."""
        name = _safe_name(sink)
        reason = "no attempt"
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._backoff * 2 ** (attempt - 1))
            try:
                await sink.send(alert)
            except AlertError as exc:
                reason = str(exc) or type(exc).__name__
                if not exc.retryable:
                    break
                continue
            except Exception as exc:  # a sink bug: report it, do not retry it
                reason = f"unexpected {type(exc).__name__}"
                break
            latency = (self._clock.now() - alert.time).total_seconds()
            self._counts["delivered"] += 1
            _call(self._on_delivered, alert, name, latency)
            return name, None
        self._counts["failed"] += 1
        log.warning("alert delivery failed", sink=name, rule=alert.rule, key_id=alert.key_id, reason=reason)
        _call(self._on_failed, alert, name, reason)
        return name, reason


@dataclass(slots=True)
class _Lane:
    queue: asyncio.Queue[Alert]
    worker: asyncio.Task[None]


def _safe_name(sink: Sink) -> str:
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) else type(sink).__name__


def _call(callback: Callable[..., None] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("alert callback failed")


async def _close_all(sinks: Sequence[Sink]) -> None:
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:
            log.exception("closing an alert sink failed", sink=_safe_name(sink))
