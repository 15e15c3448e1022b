"""Acceptance (issue 6): under a bounded flood on loopback (bad signatures, unknown keys and a
valid key far over its limits, together at least ten times the bot's rate), every order of a
legitimate bot succeeds.  The latency target is measured by bench/flood.py, not asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BENCH = Path(__file__).resolve().parents[2] / "bench" / "flood.py"


def test_a_legitimate_bot_trades_through_a_flood() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "4", "--rate", "10", "--check"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| orders that succeeded (201) |" in result.stdout
