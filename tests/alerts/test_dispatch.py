"""The alert dispatcher: suppression (dedupe, per rule+key rate limit), the bounded queue,
retries with backoff through the injected sleep, latency from the fake clock, and close."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import Any

import pytest

from bastion.alerts import Alert, AlertDispatcher, Severity
from bastion.clock import FakeClock
from bastion.errors import AlertError, ConfigError


def make_alert(
    clock: FakeClock, *, rule: str = "fraud.burst", key_id: str | None = "bst_a", **kw: Any
) -> Alert:
    fields: dict[str, Any] = {
        "rule": rule,
        "severity": Severity.WARNING,
        "key_id": key_id,
        "account": "demo",
        "action": "alert",
        "reason": "burst of orders",
        "time": clock.now(),
        "ledger_index": 7,
    }
    fields.update(kw)
    return Alert(**fields)


class FakeSink:
    """Fails with the scripted errors first, then succeeds; can advance the clock or wait."""

    kind = "fake"

    def __init__(
        self,
        name: str = "fake",
        *,
        failures: list[Exception] | None = None,
        clock: FakeClock | None = None,
        takes: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.failures = list(failures or [])
        self.clock = clock
        self.takes = takes
        self.gate = gate
        self.calls = 0
        self.sent: list[Alert] = []
        self.closed = False

    async def send(self, alert: Alert) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.clock is not None:
            self.clock.advance(self.takes)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(alert)

    async def close(self) -> None:
        self.closed = True


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def retryable(n: int) -> list[Exception]:
    return [AlertError(f"upstream answered 503 ({i})", retryable=True) for i in range(n)]


# --- suppression ----------------------------------------------------------------------------


def test_the_same_rule_key_and_action_is_deduplicated_for_a_while() -> None:
    clock = FakeClock()
    dispatcher = AlertDispatcher(clock, dedupe_seconds=60)
    assert dispatcher.submit(make_alert(clock)) is True
    clock.advance(30)
    assert dispatcher.submit(make_alert(clock)) is False
    assert dispatcher.submit(make_alert(clock, action="hold")) is True  # another action is news
    clock.advance(31)  # 61 s after the first: suppressed ones did not extend the quiet time
    assert dispatcher.submit(make_alert(clock)) is True
    stats = dispatcher.stats()
    assert stats["submitted"] == 4 and stats["suppressed_duplicate"] == 1 and stats["queued"] == 3


def test_different_keys_and_rules_are_not_suppressed() -> None:
    clock = FakeClock()
    dispatcher = AlertDispatcher(clock)
    assert dispatcher.submit(make_alert(clock, key_id="bst_a"))
    assert dispatcher.submit(make_alert(clock, key_id="bst_b"))
    assert dispatcher.submit(make_alert(clock, key_id=None))
    assert dispatcher.submit(make_alert(clock, rule="fraud.new_network"))
    assert not dispatcher.submit(make_alert(clock, key_id=None))
    assert dispatcher.stats()["suppressed_duplicate"] == 1


def test_alerts_without_a_key_are_told_apart_by_their_account() -> None:
    """Two accounts halted one after the other are two alerts (the kill switch names no key)."""
    clock = FakeClock()
    dispatcher = AlertDispatcher(clock, dedupe_seconds=60)
    halted = {"rule": "killswitch.on", "key_id": None, "action": "halted"}
    assert dispatcher.submit(make_alert(clock, **halted, account="one"))
    assert dispatcher.submit(make_alert(clock, **halted, account="two"))
    assert not dispatcher.submit(make_alert(clock, **halted, account="one"))
    assert dispatcher.stats()["suppressed_duplicate"] == 1


def test_the_rate_limit_counts_per_rule_and_key_in_a_sliding_window() -> None:
    clock = FakeClock()
    dispatcher = AlertDispatcher(clock, dedupe_seconds=0, max_per_window=3, window_seconds=600)
    for _ in range(3):
        assert dispatcher.submit(make_alert(clock))
        clock.advance(100)
    assert not dispatcher.submit(make_alert(clock))  # 4th within 600 s
    assert dispatcher.stats()["suppressed_rate"] == 1
    assert dispatcher.submit(make_alert(clock, key_id="bst_b"))  # another key has its own budget
    assert dispatcher.submit(make_alert(clock, rule="risk.limit"))  # another rule too
    clock.advance(300)  # t = 600: the first one leaves the window, the other two are still in it
    assert dispatcher.submit(make_alert(clock))
    assert not dispatcher.submit(make_alert(clock))
    assert dispatcher.stats()["suppressed_rate"] == 2


def test_the_queue_is_bounded_and_a_full_queue_drops() -> None:
    clock = FakeClock()
    dispatcher = AlertDispatcher(clock, queue_size=2)
    assert dispatcher.submit(make_alert(clock, key_id="k1"))
    assert dispatcher.submit(make_alert(clock, key_id="k2"))
    assert not dispatcher.submit(make_alert(clock, key_id="k3"))
    assert dispatcher.stats()["dropped"] == 1 and dispatcher.stats()["queued"] == 2
    # a dropped alert was not remembered: it is not a duplicate once there is room
    assert not dispatcher.submit(make_alert(clock, key_id="k3"))
    assert dispatcher.stats()["suppressed_duplicate"] == 0


class BrokenClock:
    def now(self) -> datetime:
        raise RuntimeError("clock failure")


def test_submit_never_raises() -> None:
    dispatcher = AlertDispatcher(BrokenClock())
    alert = make_alert(FakeClock())
    assert dispatcher.submit(alert) is False
    assert dispatcher.stats()["dropped"] == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"attempts": 0},
        {"queue_size": 0},
        {"max_per_window": 0},
        {"window_seconds": 0},
        {"dedupe_seconds": -1},
        {"backoff_seconds": math.nan},
        {"window_seconds": math.inf},
        {"attempts": True},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AlertDispatcher(FakeClock(), **settings)


# --- delivery -------------------------------------------------------------------------------


async def test_retryable_failures_are_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    sleep = RecordingSleep()
    dispatcher = AlertDispatcher(clock, attempts=4, backoff_seconds=0.2, sleep=sleep)
    sink = FakeSink(failures=retryable(3))
    dispatcher.set_sinks([sink])
    assert await dispatcher.send_now(make_alert(clock)) == [("fake", None)]
    assert sink.calls == 4 and len(sink.sent) == 1
    assert sleep.calls == pytest.approx([0.2, 0.4, 0.8])


async def test_after_the_last_attempt_the_failure_is_reported() -> None:
    clock = FakeClock()
    sleep = RecordingSleep()
    failed: list[tuple[str, str, str]] = []
    dispatcher = AlertDispatcher(
        clock,
        attempts=3,
        backoff_seconds=1,
        sleep=sleep,
        on_failed=lambda a, n, r: failed.append((a.rule, n, r)),
    )
    dispatcher.set_sinks([FakeSink("pager", failures=retryable(5))])
    ((name, error),) = await dispatcher.send_now(make_alert(clock))
    assert name == "pager" and error == "upstream answered 503 (2)"
    assert failed == [("fraud.burst", "pager", "upstream answered 503 (2)")]
    assert sleep.calls == [1, 2]
    assert dispatcher.stats()["failed"] == 1 and dispatcher.stats()["delivered"] == 0


async def test_non_retryable_failures_and_sink_bugs_are_not_retried() -> None:
    clock = FakeClock()
    sleep = RecordingSleep()
    dispatcher = AlertDispatcher(clock, sleep=sleep)
    refused = FakeSink("refused", failures=[AlertError("answered HTTP 404", retryable=False)])
    buggy = FakeSink("buggy", failures=[RuntimeError("oops, token=abc")])
    dispatcher.set_sinks([refused, buggy])
    results = await dispatcher.send_now(make_alert(clock))
    assert results == [("refused", "answered HTTP 404"), ("buggy", "unexpected RuntimeError")]
    assert refused.calls == 1 and buggy.calls == 1 and sleep.calls == []


async def test_latency_is_measured_from_the_request_to_the_end_of_send() -> None:
    clock = FakeClock()
    latencies: list[tuple[str, float]] = []
    dispatcher = AlertDispatcher(clock, on_delivered=lambda a, n, s: latencies.append((n, s)))
    dispatcher.set_sinks([FakeSink("slow", clock=clock, takes=2.0)])
    alert = make_alert(clock)
    clock.advance(1.5)  # queued for a while after the request arrived
    await dispatcher.start()
    assert dispatcher.submit(alert)
    await dispatcher.close()
    ((name, seconds),) = latencies
    assert name == "slow" and seconds == pytest.approx(3.5)
    assert alert.time == clock.now() - timedelta(seconds=3.5)


async def test_every_sink_gets_the_alert_concurrently_and_failures_stay_apart() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    class Opener(FakeSink):
        async def send(self, alert: Alert) -> None:
            gate.set()  # lets the waiting sink finish: only possible if both run at once
            await super().send(alert)

    waiting = FakeSink("waiting", gate=gate)
    failing = FakeSink("failing", failures=[AlertError("nope")])
    opener = Opener("opener")
    dispatcher = AlertDispatcher(clock, sleep=RecordingSleep())
    dispatcher.set_sinks([waiting, failing, opener])
    async with asyncio.timeout(5):
        results = await dispatcher.send_now(make_alert(clock))
    assert results == [("waiting", None), ("failing", "nope"), ("opener", None)]
    assert dispatcher.stats()["delivered"] == 2 and dispatcher.stats()["failed"] == 1


class Watched(FakeSink):
    """Lets a test wait until it has sent so many alerts."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.changed = asyncio.Condition()

    async def send(self, alert: Alert) -> None:
        await super().send(alert)
        async with self.changed:
            self.changed.notify_all()

    async def sent_at_least(self, n: int) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: len(self.sent) >= n)


async def test_a_dead_sink_delays_only_itself() -> None:
    """Each sink has its own lane: alerts behind one a dead webhook is still retrying reach
    the other sinks at once, in order; the dead sink gets them, in order, once it recovers."""
    clock = FakeClock()
    gate = asyncio.Event()
    dead, mail = FakeSink("dead", gate=gate), Watched("mail")
    dispatcher = AlertDispatcher(clock)
    dispatcher.set_sinks([dead, mail])
    await dispatcher.start()
    for n in range(3):
        assert dispatcher.submit(make_alert(clock, key_id=f"k{n}"))
    await mail.sent_at_least(3)
    assert [a.key_id for a in mail.sent] == ["k0", "k1", "k2"]
    assert dead.calls == 1 and dead.sent == []  # still stuck on the first
    assert dispatcher.stats()["queued"] == 2  # the dead sink's two waiting deliveries
    gate.set()
    await dispatcher.close()
    assert [a.key_id for a in dead.sent] == ["k0", "k1", "k2"]
    assert dispatcher.stats()["delivered"] == 6 and dispatcher.stats()["dropped"] == 0


async def test_a_sinks_full_backlog_drops_for_that_sink_only() -> None:
    clock = FakeClock()
    dead, mail = FakeSink("dead", gate=asyncio.Event()), Watched("mail")
    dispatcher = AlertDispatcher(clock, queue_size=2)
    dispatcher.set_sinks([dead, mail])
    await dispatcher.start()
    for n in range(5):  # one by one: the main queue never fills
        assert dispatcher.submit(make_alert(clock, key_id=f"k{n}"))
        await mail.sent_at_least(n + 1)
    # the dead sink holds one in hand and two waiting; the last two had no room in its lane
    assert dispatcher.stats()["dropped"] == 2 and len(mail.sent) == 5
    async with asyncio.timeout(5):
        await dispatcher.close(grace=0.05)
    assert dispatcher.stats()["dropped"] == 4  # and the two it never got to, at close
    assert dead.closed and mail.closed


async def test_a_raising_callback_does_not_stop_the_worker() -> None:
    clock = FakeClock()

    def explode(alert: Alert, name: str, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    sink = FakeSink()
    dispatcher = AlertDispatcher(clock, on_delivered=explode)
    dispatcher.set_sinks([sink])
    await dispatcher.start()
    assert dispatcher.submit(make_alert(clock, key_id="k1"))
    assert dispatcher.submit(make_alert(clock, key_id="k2"))
    await dispatcher.close()
    assert [a.key_id for a in sink.sent] == ["k1", "k2"]


# --- lifecycle ------------------------------------------------------------------------------


async def test_close_drains_the_queue_and_closes_the_sinks() -> None:
    clock = FakeClock()
    sink = FakeSink()
    dispatcher = AlertDispatcher(clock)
    dispatcher.set_sinks([sink])
    for n in range(5):
        assert dispatcher.submit(make_alert(clock, key_id=f"k{n}"))  # queued before the worker runs
    await dispatcher.start()
    await dispatcher.close()
    assert [a.key_id for a in sink.sent] == [f"k{n}" for n in range(5)]
    assert sink.closed
    assert dispatcher.stats()["delivered"] == 5 and dispatcher.stats()["dropped"] == 0
    assert dispatcher.submit(make_alert(clock, key_id="late")) is False  # closed
    assert dispatcher.stats()["dropped"] == 1


async def test_close_gives_up_after_the_grace_and_counts_what_is_left() -> None:
    clock = FakeClock()
    stuck = FakeSink("stuck", gate=asyncio.Event())  # never opened
    dispatcher = AlertDispatcher(clock)
    dispatcher.set_sinks([stuck])
    await dispatcher.start()
    for n in range(3):
        assert dispatcher.submit(make_alert(clock, key_id=f"k{n}"))
    async with asyncio.timeout(5):
        await dispatcher.close(grace=0.05)
    assert stuck.calls == 1 and stuck.sent == [] and stuck.closed
    assert dispatcher.stats()["dropped"] == 2  # the two never taken from the queue


async def test_replaced_sinks_are_closed_and_new_ones_used() -> None:
    clock = FakeClock()
    old, kept, new = FakeSink("old"), FakeSink("kept"), FakeSink("new")
    dispatcher = AlertDispatcher(clock)
    dispatcher.set_sinks([old, kept])
    dispatcher.set_sinks([kept, new])
    results = await dispatcher.send_now(make_alert(clock))
    assert results == [("kept", None), ("new", None)]
    await asyncio.sleep(0)
    assert old.closed and not kept.closed and not new.closed
    assert old.sent == []
    await dispatcher.close()
    assert kept.closed and new.closed
