"""Brute-force bans: repeated authentication failures block an address, or lock strangers out
of a key id.  Pure and in memory; time is passed in.

- An **address** with ``ban_after`` failures within ``window`` seconds is banned for
  ``base`` seconds, doubled for each repeat offence (at most ``maximum``); the count of
  offences is forgotten after ``maximum`` seconds without one.  Other addresses are unaffected.
- A **key id** named by ``key_after`` failures within the window is locked for the same
  kind of growing period, but only against addresses that have not used that key
  successfully in the last ``trusted_for`` seconds: the key's own bot keeps working while
  whoever is guessing at it from elsewhere is refused before any signature work.

Tables are bounded (the oldest entries go first), so an attacker with many addresses cannot
exhaust memory; at worst it forgets some failure counts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

_MAX_ENTRIES = 200_000


@dataclass(frozen=True, slots=True)
class Ban:
    kind: str  # "address" or "key"
    subject: str
    until: float
    seconds: float
    offence: int


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    offences: int = 0
    last_offence: float = float("-inf")
    until: float = float("-inf")
    announced: bool = False  # its end has been reported by sweep()


def _bounded_put(table: dict[str, _Record], subject: str) -> _Record:
    record = table.get(subject)
    if record is None:
        if len(table) >= _MAX_ENTRIES:
            del table[next(iter(table))]
        record = table[subject] = _Record()
    return record


class BanBook:
    def __init__(
        self,
        *,
        ban_after: int,
        key_after: int,
        window: float,
        base: float,
        maximum: float,
        trusted_for: float = 600.0,
    ) -> None:
        if min(ban_after, key_after) < 1 or window <= 0 or not 0 < base <= maximum:
            raise ValueError("ban thresholds, window and durations must be positive")
        self._ban_after = ban_after
        self._key_after = key_after
        self._window = window
        self._base = base
        self._maximum = maximum
        self._trusted_for = trusted_for
        self._addresses: dict[str, _Record] = {}
        self._keys: dict[str, _Record] = {}
        self._trusted: dict[str, dict[str, float]] = {}  # key id -> address -> last success

    # -- questions asked before any signature work -------------------------------------------
    def address_banned(self, address: str, now: float) -> float:
        """Seconds the address is still banned (0: not banned)."""
        record = self._addresses.get(address)
        return max(0.0, record.until - now) if record is not None else 0.0

    def key_locked(self, key_id: str, address: str, now: float) -> float:
        """Seconds ``address`` is still locked out of ``key_id`` (0: it may try)."""
        record = self._keys.get(key_id)
        if record is None or record.until <= now:
            return 0.0
        seen = self._trusted.get(key_id, {}).get(address)
        if seen is not None and now - seen <= self._trusted_for:
            return 0.0
        return record.until - now

    # -- outcomes ----------------------------------------------------------------------------
    def failure(self, address: str, key_id: str | None, now: float) -> list[Ban]:
        """An authentication failure; the bans it starts."""
        started = []
        ban = self._count(self._addresses, address, self._ban_after, now, "address")
        if ban is not None:
            started.append(ban)
        if key_id:
            ban = self._count(self._keys, key_id, self._key_after, now, "key")
            if ban is not None:
                started.append(ban)
        return started

    def success(self, address: str, key_id: str, now: float) -> None:
        seen = self._trusted.get(key_id)
        if seen is None:
            if len(self._trusted) >= _MAX_ENTRIES:
                del self._trusted[next(iter(self._trusted))]
            seen = self._trusted[key_id] = {}
        if address not in seen and len(seen) >= 64:  # a key has few real addresses
            del seen[next(iter(seen))]
        seen[address] = now

    def _count(
        self, table: dict[str, _Record], subject: str, threshold: int, now: float, kind: str
    ) -> Ban | None:
        record = _bounded_put(table, subject)
        if record.until > now:
            return None  # already banned: failures while banned do not extend it
        failures = record.failures
        failures.append(now)
        while failures and now - failures[0] > self._window:
            failures.popleft()
        if len(failures) < threshold:
            return None
        failures.clear()
        if now - record.last_offence > self._maximum:
            record.offences = 0
        record.offences += 1
        record.last_offence = now
        seconds = min(self._maximum, self._base * 2 ** (record.offences - 1))
        record.until = now + seconds
        record.announced = False
        return Ban(kind, subject, record.until, seconds, record.offences)

    def sweep(self, now: float) -> list[Ban]:
        """Bans that have ended since the last sweep (each reported once)."""
        ended = []
        for kind, table in (("address", self._addresses), ("key", self._keys)):
            for subject, record in table.items():
                if not record.announced and record.offences and record.until <= now:
                    record.announced = True
                    ended.append(Ban(kind, subject, record.until, 0.0, record.offences))
        return ended
