"""Acceptance: `bastion ledger verify` passes on the live ledger and names the first bad entry
after a row is edited, deleted or reordered (each on a consistent copy of the database)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway, cli

pytestmark = pytest.mark.e2e


def snapshot(gateway: Gateway, target: Path) -> Path:
    target.mkdir()
    shutil.copy(gateway.home / "bastion.toml", target / "bastion.toml")
    with sqlite3.connect(gateway.home / "bastion.db") as src, sqlite3.connect(target / "bastion.db") as dst:
        src.backup(dst)
    return target


def verify(home: Path) -> tuple[int, dict[str, object]]:
    result = cli(home, "ledger", "verify", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def test_the_live_ledger_verifies(gateway: Gateway) -> None:
    assert gateway.call("alice", "GET", "/v1/account").status == 200
    code, report = verify(gateway.home)
    assert code == 0
    assert report["ok"] is True
    assert int(report["entries"]) > 5  # type: ignore[call-overload]


def _edit(db: sqlite3.Connection) -> int:
    body = db.execute("SELECT body FROM ledger_entries WHERE idx = 3").fetchone()[0]
    db.execute("UPDATE ledger_entries SET body = ? WHERE idx = 3", (bytes(body).replace(b'"', b"'", 1),))
    return 3


def _edit_and_rehash(db: sqlite3.Connection) -> int:
    body = bytes(db.execute("SELECT body FROM ledger_entries WHERE idx = 4").fetchone()[0])
    forged = body.replace(b'"kind":"', b'"kind":"x', 1)
    db.execute(
        "UPDATE ledger_entries SET body = ?, hash = ? WHERE idx = 4",
        (forged, hashlib.sha256(forged).digest()),
    )
    return 5  # the next entry's link breaks (or, if a signed head ends at 5, its root: entry 4)


def _delete(db: sqlite3.Connection) -> int:
    db.execute("DELETE FROM ledger_entries WHERE idx = 2")
    return 2


def _reorder(db: sqlite3.Connection) -> int:
    db.execute("UPDATE ledger_entries SET idx = -1 WHERE idx = 1")
    db.execute("UPDATE ledger_entries SET idx = 1 WHERE idx = 2")
    db.execute("UPDATE ledger_entries SET idx = 2 WHERE idx = -1")
    return 1


@pytest.mark.parametrize("tamper", [_edit, _edit_and_rehash, _delete, _reorder], ids=lambda f: f.__name__[1:])
def test_tampering_is_caught_and_located(
    gateway: Gateway, tmp_path: Path, tamper: Callable[[sqlite3.Connection], int]
) -> None:
    home = snapshot(gateway, tmp_path / "copy")
    assert verify(home)[0] == 0
    with sqlite3.connect(home / "bastion.db") as db:
        expected = tamper(db)
    code, report = verify(home)
    assert code == 1
    assert report["ok"] is False
    if tamper is _edit_and_rehash:
        assert report["first_bad_index"] in (expected - 1, expected)
    else:
        assert report["first_bad_index"] == expected


def _edit_as_text(db: sqlite3.Connection) -> int:
    """An edit through SQL text functions turns the BLOB into TEXT: still caught, not a crash."""
    db.execute("""UPDATE ledger_entries SET body = replace(body, '"kind"', '"kinD"') WHERE idx = 6""")
    return 6


def test_an_edit_that_changes_the_column_type_is_caught(gateway: Gateway, tmp_path: Path) -> None:
    home = snapshot(gateway, tmp_path / "copy")
    with sqlite3.connect(home / "bastion.db") as db:
        expected = _edit_as_text(db)
    code, report = verify(home)
    assert (code, report["first_bad_index"]) == (1, expected)
