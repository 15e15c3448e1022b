"""SQL repositories on a real SQLite file, created by the Alembic migrations."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert

from bastion.clock import FakeClock
from bastion.domain.orders import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, VenueOrder
from bastion.domain.principals import Scope
from bastion.ledger.chain import decode_body, verify
from bastion.ledger.writer import LedgerWriter
from bastion.ports import KeyRecord, OrderRecord, OrderState, PendingEntry
from bastion.store.db import Database, migrate, sqlite_url
from bastion.store.repos import SqlAccounts, SqlKeyStore, SqlLedgerStore, SqlOrderStore, SqlPaperStore
from bastion.store.tables import accounts, metadata
from bastion.venues.paper.engine import PaperFill, PaperOrder

clock = FakeClock()


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    migrate(sqlite_url(tmp_path / "m.db"))
    sync = create_sync_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with sync.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    sync.dispose()
    assert diff == []


async def test_sqlite_runs_in_wal_mode_without_fsync_on_commit(engine: Database) -> None:
    if not engine.is_sqlite:
        pytest.skip("a property of SQLite's journal")
    mode = await engine.read(lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
    synchronous = await engine.read(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar())
    assert (mode, synchronous) == ("wal", 1)  # 1 = NORMAL


async def test_a_failed_write_rolls_back_whole(engine: Database) -> None:
    def half(conn: object) -> None:
        conn.execute(insert(accounts).values(name="x", created_us=1))  # type: ignore[attr-defined]
        raise RuntimeError("midway")

    with pytest.raises(RuntimeError):
        await engine.write(half)
    assert not await SqlAccounts(engine).exists("x")


async def test_writes_from_another_connection_are_seen(engine: Database, tmp_path: Path) -> None:
    other = Database(engine.url)
    assert await SqlAccounts(other).create("late", clock.now())
    assert await SqlAccounts(engine).exists("late")
    await other.close()


async def test_fast_path_writes_commit_and_roll_back_with_the_transaction(engine: Database) -> None:
    journal = LedgerWriter(SqlLedgerStore(engine), clock)
    await journal.start()
    await journal.append("a", {"n": 1})
    await journal.close()
    fresh = Database(engine.url)  # another connection: only committed rows are visible
    assert await SqlLedgerStore(fresh).count() == 1
    store = SqlLedgerStore(engine)

    def boom(conn: object) -> None:
        raise RuntimeError("after the ledger rows were written")

    with pytest.raises(RuntimeError):
        await engine.write(lambda conn: (store._append(conn, [PendingEntry("b", {"n": 2}, 2)]), boom(conn)))
    assert await SqlLedgerStore(fresh).count() == 1
    await fresh.close()


async def test_keys_round_trip_and_revoke(engine: Database) -> None:
    await SqlAccounts(engine).create("alice", clock.now())
    keys = SqlKeyStore(engine)
    record = KeyRecord(
        "bst_x",
        "alice",
        "ed25519",
        b"\x01" * 32,
        frozenset({Scope.READ, Scope.TRADE}),
        clock.now(),
        clock.now() + timedelta(days=1),
        None,
        "label",
    )
    await keys.create(record)
    assert await keys.get_key("bst_x") == record
    assert await keys.revoke("bst_x", clock.now())
    assert not await keys.revoke("bst_x", clock.now())
    fetched = await keys.get_key("bst_x")
    assert fetched is not None and fetched.revoked_at == clock.now()
    assert await keys.get_key("bst_missing") is None


@pytest.fixture
async def journal(engine: Database) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(SqlLedgerStore(engine), clock)
    await writer.start()
    yield writer
    await writer.close()


def _record(order_id: str, account: str, request: OrderRequest) -> OrderRecord:
    return OrderRecord(
        order_id,
        account,
        "bst_x",
        request,
        request.fingerprint(),
        OrderState.PENDING,
        clock.now(),
        clock.now(),
    )


async def test_orders_unique_per_account_and_client_id(engine: Database, journal: LedgerWriter) -> None:
    accounts_ = SqlAccounts(engine)
    await accounts_.create("alice", clock.now())
    await accounts_.create("bob", clock.now())
    orders = SqlOrderStore(engine, journal)
    request = OrderRequest(
        "c1", "GOOG", Side.BUY, OrderType.LIMIT, Decimal("1.5"), Decimal("10.25"), TimeInForce.GTC
    )
    record = _record("ord_1", "alice", request)
    assert await orders.insert(record, ("order.submit", {"id": "ord_1"}))
    assert not await orders.insert(_record("ord_2", "alice", request), ("order.submit", {"id": "ord_2"}))
    assert await orders.insert(_record("ord_3", "bob", request), ("order.submit", {"id": "ord_3"}))
    snapshot = VenueOrder(
        "P1",
        "c1",
        "GOOG",
        Side.BUY,
        OrderType.LIMIT,
        TimeInForce.GTC,
        Decimal("1.5"),
        Decimal("10.25"),
        OrderStatus.NEW,
        Decimal(0),
        None,
        clock.now(),
        clock.now(),
    )
    record.state, record.venue_order_id, record.snapshot = OrderState.PLACED, "P1", snapshot
    await orders.save(record, ("order.accepted", {"id": "ord_1"}))
    loaded = await orders.get("ord_1")
    assert loaded is not None
    assert (loaded.request, loaded.snapshot, loaded.status) == (request, snapshot, "new")
    assert [r.id for r in await orders.list("alice", symbol="GOOG", statuses=("new",), limit=10)] == ["ord_1"]
    assert await orders.list("alice", symbol="BTC-USD", statuses=None, limit=10) == []
    # Each write landed with its ledger entry; the refused duplicate left no entry at all.
    entries = [row async for row in SqlLedgerStore(engine).rows()]
    kinds = [decode_body(r.body).kind for r in entries]
    ids = [decode_body(r.body).data["id"] for r in entries]
    assert (kinds, ids) == (["order.submit", "order.submit", "order.accepted"], ["ord_1", "ord_3", "ord_1"])
    assert verify(entries)[0] == 3


async def test_concurrent_duplicates_in_one_batch_fail_only_themselves(
    engine: Database, journal: LedgerWriter
) -> None:
    await SqlAccounts(engine).create("alice", clock.now())
    orders = SqlOrderStore(engine, journal)
    request = OrderRequest("dup", "GOOG", Side.BUY, OrderType.MARKET, Decimal(1), None, TimeInForce.IOC)
    others = [
        OrderRequest(f"o{n}", "GOOG", Side.BUY, OrderType.MARKET, Decimal(1), None, TimeInForce.IOC)
        for n in range(5)
    ]
    results = await asyncio.gather(
        *(
            orders.insert(_record(f"ord_d{n}", "alice", request), ("order.submit", {"n": n}))
            for n in range(5)
        ),
        *(
            orders.insert(_record(f"ord_o{n}", "alice", r), ("order.submit", {"o": n}))
            for n, r in enumerate(others)
        ),
    )
    assert sum(results[:5]) == 1
    assert all(results[5:])
    assert await SqlLedgerStore(engine).count() == 6


async def test_concurrent_ledger_writers_share_one_chain(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "l.db")
    await asyncio.to_thread(migrate, url)
    engines = [Database(url), Database(url, sqlite_fast_path=False)]
    writers = [LedgerWriter(SqlLedgerStore(e), clock) for e in engines]
    for w in writers:
        await w.start()
    indexes = await asyncio.gather(*(writers[n % 2].append("e", {"n": n}) for n in range(200)))
    for w in writers:
        await w.close()
    assert sorted(indexes) == list(range(200))
    store = SqlLedgerStore(engines[0])
    assert verify([row async for row in store.rows(chunk=37)])[0] == 200
    for e in engines:
        await e.close()


async def test_ledger_batch_is_atomic(engine: Database) -> None:
    store = SqlLedgerStore(engine)
    await store.append_batch([PendingEntry("a", {"n": 1}, 1)])
    with pytest.raises(TypeError):
        await store.append_batch([PendingEntry("b", {"n": 2}, 2), PendingEntry("c", {"bad": object()}, 3)])
    assert await store.count() == 1


async def test_paper_state_round_trips(engine: Database) -> None:
    store = SqlPaperStore(engine)
    order = PaperOrder(
        "P000000000007",
        "alice",
        "c1",
        "GOOG",
        Side.SELL,
        OrderType.LIMIT,
        TimeInForce.GTC,
        Decimal("2"),
        Decimal("10.5"),
        OrderStatus.PARTIALLY_FILLED,
        1,
        2,
        Decimal("1"),
        Decimal("10.5"),
        [PaperFill(Decimal("10.5"), Decimal("1"), 2)],
    )
    await store.save(
        {"alice": {"USD": (Decimal("10.5"), Decimal(0)), "GOOG": (Decimal(3), Decimal(1))}}, [order]
    )
    state = await store.load("alice")
    assert state is not None
    assert state.balances == {"USD": (Decimal("10.5"), Decimal(0)), "GOOG": (Decimal(3), Decimal(1))}
    assert state.orders == [order]
    assert await store.max_sequence() == 7
    assert await store.load("bob") is None


async def test_a_stale_cached_head_is_detected_and_retried(engine: Database) -> None:
    """The server caches the ledger head; the CLI appending meanwhile must not break it."""
    server = LedgerWriter(SqlLedgerStore(engine), clock)
    await server.start()
    assert await server.append("server", {"n": 1}) == 0
    cli = Database(engine.url, sqlite_fast_path=True)
    cli_writer = LedgerWriter(SqlLedgerStore(cli), clock)
    await cli_writer.start()
    assert await cli_writer.append("cli", {"n": 2}) == 1
    await cli_writer.close()
    await cli.close()
    assert await server.append("server", {"n": 3}) == 2
    await server.close()
    assert verify([row async for row in SqlLedgerStore(engine).rows()])[0] == 3


async def test_rotation_allow_lists_and_last_use(engine: Database) -> None:
    await SqlAccounts(engine).create("alice", clock.now())
    keys = SqlKeyStore(engine)
    old = KeyRecord(
        "bst_old",
        "alice",
        "ed25519",
        b"\x01" * 32,
        frozenset({Scope.READ}),
        clock.now(),
        clock.now() + timedelta(days=90),
        None,
        "bot",
        allowed_cidrs=("10.0.0.0/8",),
    )
    await keys.create(old)
    new = dataclasses.replace(old, key_id="bst_new", public_key=b"\x02" * 32)
    ends = clock.now() + timedelta(hours=24)
    await keys.rotate(old, new, ends)
    fetched_old, fetched_new = await keys.get_key("bst_old"), await keys.get_key("bst_new")
    assert fetched_old is not None and fetched_new is not None
    assert (fetched_old.expires_at, fetched_old.rotated_to) == (ends, "bst_new")
    assert fetched_new.allowed_cidrs == ("10.0.0.0/8",)
    assert await keys.set_allowed_cidrs("bst_new", ("127.0.0.0/8", "::1/128"))
    assert not await keys.set_allowed_cidrs("bst_missing", ())
    await keys.record_usage({"bst_new": (clock.now(), "127.0.0.1")})
    used = await keys.get_key("bst_new")
    assert used is not None
    assert (used.allowed_cidrs, used.last_used_at, used.last_used_ip) == (
        ("127.0.0.0/8", "::1/128"),
        clock.now(),
        "127.0.0.1",
    )
