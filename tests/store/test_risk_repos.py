"""Policy versions and trading states on every back end (SQLite both paths, PostgreSQL)."""

from __future__ import annotations

import pytest

from bastion.clock import FakeClock
from bastion.domain.principals import Scope
from bastion.ledger.chain import decode_body
from bastion.ledger.writer import LedgerWriter
from bastion.ports import KeyRecord, RowConflict
from bastion.store.db import Database
from bastion.store.repos import SqlAccounts, SqlKeyStore, SqlLedgerStore, SqlPolicyStore, SqlTradingStateStore

clock = FakeClock()


async def _journal(db: Database) -> tuple[LedgerWriter, SqlLedgerStore]:
    store = SqlLedgerStore(db)
    writer = LedgerWriter(store, clock)
    await writer.start()
    return writer, store


async def _kinds(store: SqlLedgerStore) -> list[tuple[str, dict[str, object]]]:
    return [(b.kind, b.data) for b in [decode_body(r.body) async for r in store.rows()]]


async def test_policy_versions_commit_with_their_ledger_entry(engine: Database) -> None:
    writer, ledger = await _journal(engine)
    policies = SqlPolicyStore(engine, writer)
    assert await policies.current() == {} and await policies.stamp() == (0, 0)
    entry = {"subject": "account:a", "actor": "op"}
    v1 = await policies.put("account:a", {"max_open_orders": 3}, 0, actor="op", now=clock.now(), entry=entry)
    v2 = await policies.put("account:a", {"max_open_orders": 4}, v1, actor="op", now=clock.now(), entry=entry)
    await policies.put("key:k", {"reduce_only": True}, 0, actor="op2", now=clock.now(), entry=entry)
    assert (v1, v2) == (1, 2)
    assert await policies.current() == {
        "account:a": (2, {"max_open_orders": 4}),
        "key:k": (1, {"reduce_only": True}),
    }
    assert [v for v, _, _ in await policies.history("account:a")] == [1, 2]
    assert (await policies.stamp())[0] == 3
    # a stale writer (expected version 1 again) writes nothing, not even its ledger entry
    with pytest.raises(RowConflict):
        await policies.put("account:a", {"max_open_orders": 9}, v1, actor="op", now=clock.now(), entry=entry)
    kinds = await _kinds(ledger)
    assert [k for k, _ in kinds] == ["policy.changed"] * 3 and [d["version"] for _, d in kinds] == [1, 2, 1]
    assert (await policies.current())["account:a"] == (2, {"max_open_orders": 4})
    await writer.close()


async def test_scopes_change_with_the_policy_entry(engine: Database) -> None:
    writer, _ = await _journal(engine)
    await SqlAccounts(engine).create("alice", clock.now())
    keys = SqlKeyStore(engine)
    record = KeyRecord("bst_x", "alice", "ed25519", b"\x01" * 32, frozenset(Scope), clock.now(), None, None)
    await keys.create(record)
    also = keys.scopes_write(record.key_id, frozenset({Scope.READ}))
    await SqlPolicyStore(engine, writer).put(
        f"key:{record.key_id}", {}, 0, actor="op", now=clock.now(), entry={}, also=also
    )
    stored = await keys.get_key(record.key_id)
    assert stored is not None and stored.scopes == frozenset({Scope.READ})
    await writer.close()


async def test_trading_states_store_only_what_is_not_active(engine: Database) -> None:
    writer, ledger = await _journal(engine)
    states = SqlTradingStateStore(engine, writer)
    await states.put("global", "", "halted", actor="op", now=clock.now(), entry={"state": "halted"})
    await states.put("account", "alice", "reducing", actor="op", now=clock.now(), entry={"state": "reducing"})
    await states.put("account", "alice", "halted", actor="op", now=clock.now(), entry={"state": "halted"})
    assert sorted(await states.all()) == [("account", "alice", "halted"), ("global", "", "halted")]
    await states.put("global", "", "active", actor="op", now=clock.now(), entry={"state": "active"})
    assert await states.all() == [("account", "alice", "halted")]
    assert [k for k, _ in await _kinds(ledger)] == ["killswitch.changed"] * 4
    await writer.close()
