"""The circuit breaker and ``call_through``, on a fake clock and the in-memory transport."""

from __future__ import annotations

import pytest

from bastion.clock import FakeClock
from bastion.errors import ConfigError, VenueError
from bastion.venues.http import CircuitBreaker, HttpAnswer, HttpRequest, MemoryTransport, call_through

OK = HttpAnswer(200, "application/json", b"{}")


def transport(answers: list[HttpAnswer | Exception]) -> MemoryTransport:
    async def handler(request: HttpRequest) -> HttpAnswer:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return MemoryTransport(handler)


async def test_failures_in_a_row_open_the_circuit_until_the_cooldown_then_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=2, cooldown=30)
    fake = transport([VenueError("VENUE_TIMEOUT"), HttpAnswer(503, "", b""), OK, OK])
    request = HttpRequest("GET", "/api/v3/ping")
    with pytest.raises(VenueError):
        await call_through(breaker, fake, request)
    assert (await call_through(breaker, fake, request)).status == 503  # counted, still returned
    with pytest.raises(VenueError, match="CIRCUIT_OPEN"):
        await call_through(breaker, fake, request)
    assert len(fake.sent) == 2  # the open circuit sent nothing
    clock.advance(31)
    assert (await call_through(breaker, fake, request)).status == 200  # the trial closes it
    assert (await call_through(breaker, fake, request)).status == 200
    assert not breaker.is_open


async def test_a_failed_trial_opens_it_again_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=2, cooldown=10)
    fake = transport([HttpAnswer(500, "", b""), OK, HttpAnswer(500, "", b""), HttpAnswer(500, "", b"")])
    request = HttpRequest("GET", "/")
    await call_through(breaker, fake, request)
    await call_through(breaker, fake, request)  # success: one failure is forgotten
    await call_through(breaker, fake, request)
    assert not breaker.is_open
    await call_through(breaker, fake, request)
    assert breaker.is_open
    clock.advance(11)
    breaker.before()  # the half-open trial is taken ...
    with pytest.raises(VenueError, match="CIRCUIT_OPEN"):
        breaker.before()  # ... and no second call goes with it
    breaker.failed()
    assert breaker.is_open


async def test_retry_after_of_a_rate_limit_opens_it_for_that_long() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=100, cooldown=10)
    fake = transport([HttpAnswer(429, "application/json", b"{}", retry_after="7"), OK])
    await call_through(breaker, fake, HttpRequest("GET", "/"))
    assert breaker.is_open
    clock.advance(6)
    assert breaker.is_open
    clock.advance(2)
    assert (await call_through(breaker, fake, HttpRequest("GET", "/"))).status == 200


def test_breaker_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(FakeClock(), failures=0, cooldown=1)
    with pytest.raises(ConfigError):
        CircuitBreaker(FakeClock(), failures=1, cooldown=0)


async def test_a_retry_after_that_is_not_ascii_digits_is_ignored_not_a_crash() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failures=100, cooldown=10)
    for value in ("\u00b2", "1.5", "-1", "9999999", ""):
        fake = transport([HttpAnswer(429, "application/json", b"{}", retry_after=value)])
        assert (await call_through(breaker, fake, HttpRequest("GET", "/"))).status == 429
        assert not breaker.is_open  # counted as a failure, no cooldown taken from the header
