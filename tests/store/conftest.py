"""A real PostgreSQL for the store tests: a throwaway cluster on 127.0.0.1, started here."""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bastion.store.db import Database, migrate, sqlite_url


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    return found[-1] if found else None


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package creates the postgres user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL missing (scripts/system-deps.sh installs it)")
    # Not under pytest's tmp_path: its parents are private to root, out of the postgres user's reach.
    root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "bastion", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh database on the session's server."""
    createdb = _bin("createdb")
    assert createdb is not None
    host, port = postgres_server.split(":")
    name = "t_" + secrets.token_hex(6)
    subprocess.run(
        [createdb, "-h", host, "-p", port, "-U", "bastion", name], check=True, capture_output=True, timeout=60
    )
    return f"postgresql+asyncpg://bastion@{postgres_server}/{name}"


@pytest.fixture(params=["sqlite-fast-path", "portable-sqlalchemy", "postgresql"])
async def engine(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """Every repository test runs on SQLite through sqlite3 directly, on SQLite through the
    portable SQLAlchemy statements, and on a real PostgreSQL through asyncpg."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = sqlite_url(tmp_path / "t.db")
    await asyncio.to_thread(migrate, url)
    db = Database(url, sqlite_fast_path=request.param == "sqlite-fast-path")
    await db.start()
    yield db
    await db.close()
