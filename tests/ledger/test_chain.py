from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bastion.clock import FakeClock
from bastion.errors import LedgerCorrupt, LedgerError
from bastion.ledger.chain import GENESIS, make_entry, verify
from bastion.ledger.writer import LedgerWriter
from bastion.ports import LedgerRow
from bastion.store.memory import MemoryLedgerStore


def chain(n: int) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    prev = GENESIS
    for i in range(n):
        row = make_entry(i, prev, "request", 1_000 + i, {"i": i, "verdict": "allow"})
        rows.append(row)
        prev = row.hash
    return rows


def test_an_intact_chain_verifies() -> None:
    rows = chain(10)
    assert verify(rows) == (10, rows[-1].hash)
    assert verify([]) == (0, GENESIS)


def test_edited_entry_is_named() -> None:
    rows = chain(10)
    rows[4] = dataclasses.replace(rows[4], body=rows[4].body.replace(b'"allow"', b'"deny"'))
    with pytest.raises(LedgerCorrupt) as caught:
        verify(rows)
    assert caught.value.index == 4


def test_edited_entry_with_recomputed_hash_breaks_the_next_link() -> None:
    rows = chain(10)
    forged = make_entry(4, rows[3].hash, "request", 1, {"i": 4, "verdict": "deny"})
    rows[4] = forged
    with pytest.raises(LedgerCorrupt) as caught:
        verify(rows)
    assert caught.value.index == 5


def test_deleted_entry_is_named() -> None:
    rows = chain(10)
    del rows[6]
    with pytest.raises(LedgerCorrupt) as caught:
        verify(rows)
    assert caught.value.index == 6


def test_reordered_entries_are_caught() -> None:
    rows = chain(10)
    a, b = rows[2], rows[3]
    rows[2] = LedgerRow(2, b.body, b.hash)
    rows[3] = LedgerRow(3, a.body, a.hash)
    with pytest.raises(LedgerCorrupt) as caught:
        verify(rows)
    assert caught.value.index == 2


async def test_writer_batches_and_returns_indexes() -> None:
    store = MemoryLedgerStore()
    writer = LedgerWriter(store, FakeClock())
    await writer.start()
    indexes = await asyncio.gather(*(writer.append("e", {"n": n}) for n in range(50)))
    await writer.close()
    assert sorted(indexes) == list(range(50))
    assert sum(store.batches) == 50
    assert len(store.batches) < 50  # concurrent appends share commits
    verify(store.rows)


async def test_writer_failure_reaches_every_caller_and_it_recovers() -> None:
    store = MemoryLedgerStore()
    writer = LedgerWriter(store, FakeClock())
    await writer.start()
    store.fail_next = True
    results = await asyncio.gather(*(writer.append("e", {"n": n}) for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, LedgerError) for r in results)
    assert await writer.append("e", {"n": "after"}) == 0
    await writer.close()


async def test_append_before_start_is_refused() -> None:
    writer = LedgerWriter(MemoryLedgerStore(), FakeClock())
    with pytest.raises(LedgerError):
        await writer.append("e", {})


async def test_group_commit_shares_commits_under_load_and_not_when_idle() -> None:
    store = MemoryLedgerStore()
    writer = LedgerWriter(store, FakeClock(), linger=0.005, busy_window=1.0)
    await writer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writer.append("lone", {})  # idle: committed at once, no linger
    assert loop.time() - started < 0.005
    # Busy now: requests arriving within the linger share the next commit.
    first = asyncio.ensure_future(writer.append("a", {}))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(writer.append("b", {"n": n})) for n in range(9)]
    await asyncio.gather(first, *rest)
    await writer.close()
    assert store.batches == [1, 10]
    assert (writer.batches, writer.entries) == (2, 11)


def test_group_commit_settings_are_checked() -> None:
    for bad in ({"linger": -1.0}, {"linger": 0.5}, {"busy_window": -1.0}):
        with pytest.raises(ValueError, match="linger"):
            LedgerWriter(MemoryLedgerStore(), FakeClock(), **bad)
