"""Fraud sightings on every back end (SQLite both paths, PostgreSQL): a rotated key inherits
where its predecessor was used, once; erasure takes the account's sightings with it."""

from __future__ import annotations

from datetime import timedelta

from bastion.clock import FakeClock
from bastion.ledger.writer import LedgerWriter
from bastion.store.db import Database
from bastion.store.fraud_repos import SqlFraudStore
from bastion.store.repos import SqlLedgerStore

clock = FakeClock()


async def _store(db: Database) -> SqlFraudStore:
    writer = LedgerWriter(SqlLedgerStore(db), clock)
    await writer.start()
    return SqlFraudStore(db, writer)


async def test_a_rotated_key_inherits_its_predecessors_sightings_once(engine: Database) -> None:
    store = await _store(engine)
    used = [("10.0.0.1", "10.0.0.0/24"), ("192.0.2.7", "192.0.2.0/24")]
    await store.add_sightings([("k_old", "acct", ip, net, clock.now()) for ip, net in used])
    await store.add_sightings([("k_other", "acct2", "198.51.100.1", "198.51.100.0/24", clock.now())])
    later = clock.now() + timedelta(days=3)
    assert await store.copy_sightings("k_old", "k_new", later) == 2
    assert sorted(await store.sightings(key_id="k_new")) == sorted(used)
    assert sorted(await store.sightings(key_id="k_old")) == sorted(used)  # the old key keeps its own
    # copied again (a resumed rotation): nothing doubles
    assert await store.copy_sightings("k_old", "k_new", later) == 2
    assert len(await store.sightings(key_id="k_new")) == 2
    assert await store.copy_sightings("k_unknown", "k_newer", later) == 0
    assert await store.sightings(key_id="k_newer") == []
    assert sorted(await store.sightings(account="acct")) == sorted(used * 2)  # both keys', per key


async def test_erasure_forgets_the_accounts_sightings_only(engine: Database) -> None:
    store = await _store(engine)
    await store.add_sightings([("k1", "gone", "10.0.0.1", "10.0.0.0/24", clock.now())])
    await store.add_sightings([("k2", "stays", "10.0.0.2", "10.0.0.0/24", clock.now())])
    await store.forget("gone")
    assert await store.sightings(account="gone") == []
    assert await store.sightings(key_id="k1") == []
    assert await store.sightings(account="stays") == [("10.0.0.2", "10.0.0.0/24")]
