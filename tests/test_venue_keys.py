"""``Services.venue_key``: an account's venue credential opened from the vault for one call,
and a sealed row that does not open fails the call closed (no stack trace, no secret)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.config import load_settings
from bastion.errors import VenueError
from bastion.services import Services

VENUE_SECRET = "s-vk-secret-81c2"  # pragma: allowlist secret - test data
CREDENTIAL = json.dumps({"api_key": "k-vk", "api_secret": VENUE_SECRET}).encode()


def test_the_newest_credential_opens_and_a_tampered_one_fails_closed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--home", str(home)]).exit_code == 0
    assert runner.invoke(app, ["accounts", "create", "alice", "--home", str(home)]).exit_code == 0
    asyncio.run(_check(home))


async def _check(home: Path) -> None:
    services = Services.build(home, load_settings(home))
    await services.start()
    try:
        assert await services.venue_key("alice") is None
        await services.add_venue_credential("alice", "paper", CREDENTIAL)
        key = await services.venue_key("alice")
        assert key is not None and (key.api_key, key.secret) == ("k-vk", VENUE_SECRET.encode())
        assert VENUE_SECRET not in repr(key)
        with sqlite3.connect(home / "bastion.db") as db:
            (sealed,) = db.execute("SELECT sealed FROM venue_credentials").fetchone()
            tampered = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
            db.execute("UPDATE venue_credentials SET sealed = ?", (tampered,))
        with pytest.raises(VenueError, match=r"^VENUE_CREDENTIAL_UNREADABLE$"):
            await services.venue_key("alice")
    finally:
        await services.close()
