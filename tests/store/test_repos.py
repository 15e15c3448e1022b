"""SQL repositories on a real SQLite file, created by the Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import FakeClock
from bastion.domain.orders import OrderRequest, OrderStatus, OrderType, Side, TimeInForce, VenueOrder
from bastion.domain.principals import Scope
from bastion.ledger.chain import verify
from bastion.ledger.writer import LedgerWriter
from bastion.ports import KeyRecord, OrderRecord, OrderState, PendingEntry
from bastion.store.db import create_engine, migrate, sqlite_url
from bastion.store.repos import SqlAccounts, SqlKeyStore, SqlLedgerStore, SqlOrderStore, SqlPaperStore
from bastion.store.tables import metadata
from bastion.venues.paper.engine import PaperFill, PaperOrder

clock = FakeClock()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = sqlite_url(tmp_path / "t.db")
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    migrate(sqlite_url(tmp_path / "m.db"))
    sync = create_sync_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with sync.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    sync.dispose()
    assert diff == []


async def test_sqlite_runs_in_wal_mode(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


async def test_keys_round_trip_and_revoke(engine: AsyncEngine) -> None:
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


async def test_orders_unique_per_account_and_client_id(engine: AsyncEngine) -> None:
    accounts = SqlAccounts(engine)
    await accounts.create("alice", clock.now())
    await accounts.create("bob", clock.now())
    orders = SqlOrderStore(engine)
    request = OrderRequest(
        "c1", "GOOG", Side.BUY, OrderType.LIMIT, Decimal("1.5"), Decimal("10.25"), TimeInForce.GTC
    )
    record = OrderRecord(
        "ord_1",
        "alice",
        "bst_x",
        request,
        request.fingerprint(),
        OrderState.PENDING,
        clock.now(),
        clock.now(),
    )
    assert await orders.insert(record)
    assert not await orders.insert(
        OrderRecord("ord_2", "alice", "bst_x", request, "other", OrderState.PENDING, clock.now(), clock.now())
    )
    assert await orders.insert(
        OrderRecord("ord_3", "bob", "bst_y", request, "fp", OrderState.PENDING, clock.now(), clock.now())
    )
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
    await orders.save(record)
    loaded = await orders.get("ord_1")
    assert loaded is not None
    assert (loaded.request, loaded.snapshot, loaded.status) == (request, snapshot, "new")
    assert [r.id for r in await orders.list("alice", symbol="GOOG", statuses=("new",), limit=10)] == ["ord_1"]
    assert await orders.list("alice", symbol="BTC-USD", statuses=None, limit=10) == []


async def test_concurrent_ledger_writers_share_one_chain(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "l.db")
    await asyncio.to_thread(migrate, url)
    engines = [create_engine(url), create_engine(url)]
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
        await e.dispose()


async def test_ledger_batch_is_atomic(engine: AsyncEngine) -> None:
    store = SqlLedgerStore(engine)
    await store.append_batch([PendingEntry("a", {"n": 1}, 1)])
    with pytest.raises(TypeError):
        await store.append_batch([PendingEntry("b", {"n": 2}, 2), PendingEntry("c", {"bad": object()}, 3)])
    assert await store.count() == 1


async def test_paper_state_round_trips(engine: AsyncEngine) -> None:
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
