"""What an alert is: which rule fired, how bad it is, for which key and account, what Bastion
did about it and when the triggering request arrived.

:meth:`Alert.to_json` is the one wire form (webhook bodies, e-mail bodies, log fields);
:meth:`Alert.summary` is one human line for chat messages and e-mail subjects.  Reasons and
details come from Bastion's own code but may quote caller input, so both renderings treat
them as untrusted text: ``to_json`` turns every value into plain JSON data and ``summary``
replaces control characters (CR, LF, Unicode line separators) so the line cannot be split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from types import MappingProxyType

# The fraud stage's actions, a test, and the operator changes Bastion reports (a key revoked, a
# kill switch set to halted or reducing).
ACTIONS = frozenset({"allow", "alert", "hold", "deny", "halt", "test", "revoke", "halted", "reducing"})

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_REASON = 300
_MAX_DEPTH = 8


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert.  ``time`` is when the triggering request was received (aware, UTC or any
    offset: it is rendered in UTC); ``details`` is copied into a read-only mapping."""

    rule: str
    severity: Severity
    key_id: str | None
    account: str | None
    action: str
    reason: str
    time: datetime
    ledger_index: int | None
    details: Mapping[str, object] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("Alert.time must be an aware datetime")
        if self.action not in ACTIONS:
            raise ValueError(f"Alert.action must be one of {sorted(ACTIONS)}")
        if not self.rule:
            raise ValueError("Alert.rule must not be empty")
        object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_json(self) -> dict[str, object]:
        """Exactly the keys rule, severity, key_id, account, action, reason, time (ISO 8601,
        UTC, ending in ``Z``), ledger_index and details; every value is plain JSON data."""
        details = _jsonable(self.details, 0)
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "key_id": self.key_id,
            "account": self.account,
            "action": self.action,
            "reason": self.reason,
            "time": iso_utc(self.time),
            "ledger_index": self.ledger_index,
            "details": details if isinstance(details, dict) else {},
        }

    def summary(self) -> str:
        """One line, e.g. ``[critical] fraud.new_network: key bst_x account demo → hold (new network)``.
        Control characters are replaced by spaces and the reason is shortened to 300 characters."""
        parts = [f"[{self.severity.value}] {clean_line(self.rule)}:"]
        if self.key_id is not None:
            parts.append(f"key {clean_line(self.key_id)}")
        if self.account is not None:
            parts.append(f"account {clean_line(self.account)}")
        parts.append(f"→ {clean_line(self.action)}")
        reason = clean_line(self.reason)
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 1] + "…"
        if reason:
            parts.append(f"({reason})")
        return " ".join(parts)


def clean_line(text: str) -> str:
    """``text`` on one line: runs of control characters become one space."""
    return _CONTROL.sub(" ", text).strip()


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: object, depth: int) -> object:
    """``value`` as JSON data: Decimals and other scalars as strings, non-finite floats as strings,
    mappings with string keys, sequences as lists; nesting deeper than a few levels is cut."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value, depth)
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | date):
        return str(value)
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, depth + 1) for v in items]
    return str(value)
