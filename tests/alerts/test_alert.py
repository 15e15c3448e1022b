"""The alert record: its exact JSON form and its one-line summary, with untrusted text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from bastion.alerts import Alert, Severity

WHEN = datetime(2026, 1, 5, 12, 0, 1, 250000, tzinfo=UTC)


def make(**kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "rule": "fraud.new_network",
        "severity": Severity.CRITICAL,
        "key_id": "bst_k1",
        "account": "demo",
        "action": "hold",
        "reason": "first order from 203.0.113.9",
        "time": WHEN,
        "ledger_index": 12,
    }
    fields.update(kw)
    return Alert(**fields)


def test_to_json_has_exactly_the_documented_fields() -> None:
    alert = make(details={"score": Decimal("0.93"), "rules": ("a", "b"), "at": WHEN, "nan": float("nan")})
    data = alert.to_json()
    assert list(data) == [
        "rule",
        "severity",
        "key_id",
        "account",
        "action",
        "reason",
        "time",
        "ledger_index",
        "details",
    ]
    assert data["severity"] == "critical" and data["ledger_index"] == 12
    assert data["time"] == "2026-01-05T12:00:01.250000Z"
    assert data["details"] == {
        "score": "0.93",
        "rules": ["a", "b"],
        "at": "2026-01-05T12:00:01.250000Z",
        "nan": "nan",
    }
    json.dumps(data, allow_nan=False)  # plain JSON, whatever the details held


def test_time_is_rendered_in_utc_and_must_be_aware() -> None:
    paris = timezone(timedelta(hours=1))
    assert make(time=datetime(2026, 1, 5, 13, 0, tzinfo=paris)).to_json()["time"] == "2026-01-05T12:00:00Z"
    with pytest.raises(ValueError, match="aware"):
        make(time=datetime(2026, 1, 5, 12, 0))  # noqa: DTZ001 - the naive time under test


def test_details_are_copied_and_read_only() -> None:
    details: dict[str, object] = {"score": 1}
    alert = make(details=details)
    details["score"] = 2
    assert alert.details["score"] == 1
    with pytest.raises(TypeError):
        alert.details["score"] = 3  # type: ignore[index]
    assert make().to_json()["details"] == {}


def test_action_and_severity_are_checked() -> None:
    with pytest.raises(ValueError, match="action"):
        make(action="explode")
    with pytest.raises(ValueError, match="loud"):
        make(severity="loud")
    assert make(severity="warning").severity is Severity.WARNING


def test_summary_is_one_line() -> None:
    assert (
        make().summary()
        == "[critical] fraud.new_network: key bst_k1 account demo → hold (first order from 203.0.113.9)"
    )
    assert make(key_id=None, account=None, reason="").summary() == "[critical] fraud.new_network: → hold"
    hostile = make(reason="x\r\nBcc: a@b.c\u2028y\x00z", account="de\nmo")
    line = hostile.summary()
    assert "\r" not in line and "\n" not in line and "\u2028" not in line and "\x00" not in line
    assert "(x Bcc: a@b.c y z)" in line and "account de mo" in line


def test_a_long_reason_is_shortened_in_the_summary_only() -> None:
    alert = make(reason="r" * 1000)
    assert len(alert.summary()) < 400 and alert.summary().endswith("…)")
    assert alert.to_json()["reason"] == "r" * 1000
