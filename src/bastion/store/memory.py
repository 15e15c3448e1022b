"""In-memory implementations of the store ports, for tests and single-process tools."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime

from bastion.errors import LedgerError
from bastion.ledger.chain import GENESIS, make_entry
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import MemoryTree
from bastion.ports import (
    HoldRecord,
    HoldStatus,
    KeyRecord,
    LedgerRow,
    OrderRecord,
    PendingEntry,
    RowConflict,
    RowWrite,
)


class MemoryKeyStore:
    def __init__(self, records: Sequence[KeyRecord] = ()) -> None:
        self.records = {r.key_id: r for r in records}
        self.lookups = 0

    async def get_key(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return self.records.get(key_id)


class MemoryLedger:
    """A ledger that chains entries in memory; ``fail`` makes appends raise (fail-closed tests)."""

    def __init__(self) -> None:
        self.rows: list[LedgerRow] = []
        self.entries: list[tuple[str, dict[str, object]]] = []
        self.fail = False

    def enqueue(
        self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None
    ) -> Awaitable[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._append(kind, data, write))
        except LedgerError as exc:
            future.set_exception(exc)
        return future

    async def append(self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None) -> int:
        return self._append(kind, data, write)

    def _append(self, kind: str, data: Mapping[str, object], write: RowWrite | None) -> int:
        if self.fail:
            raise LedgerError("ledger unavailable (test)")
        if write is not None:
            write(None)
        prev = self.rows[-1].hash if self.rows else GENESIS
        row = make_entry(len(self.rows), prev, kind, 0, data)
        self.rows.append(row)
        self.entries.append((kind, dict(data)))
        return row.index

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.entries]

    async def receipt(self, index: int) -> dict[str, object] | None:
        return None


class MemoryOrderStore:
    """Orders in a dict; each write also appends its entry to ``ledger``."""

    def __init__(self, ledger: MemoryLedger | None = None) -> None:
        self.records: dict[str, OrderRecord] = {}
        self.ledger = ledger or MemoryLedger()

    async def get(self, order_id: str) -> OrderRecord | None:
        record = self.records.get(order_id)
        return copy.copy(record)

    async def find(self, account: str, client_order_id: str) -> OrderRecord | None:
        for record in self.records.values():
            if record.account == account and record.request.client_order_id == client_order_id:
                return copy.copy(record)
        return None

    async def insert(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> bool:
        if await self.find(record.account, record.request.client_order_id) is not None:
            return False
        await self.ledger.append(*entry)
        self.records[record.id] = copy.copy(record)
        return True

    async def save(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> None:
        await self.ledger.append(*entry)
        self.records[record.id] = copy.copy(record)

    def save_later(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> Awaitable[int]:
        self.records[record.id] = copy.copy(record)
        return self.ledger.enqueue(*entry)

    async def list(
        self, account: str, *, symbol: str | None, statuses: Sequence[str] | None, limit: int
    ) -> Sequence[OrderRecord]:
        found = [
            copy.copy(r)
            for r in self.records.values()
            if r.account == account
            and (symbol is None or r.request.symbol == symbol)
            and (statuses is None or r.status in statuses)
        ]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return found[:limit]


class MemoryLedgerStore:
    """The ledger writer's store port, in memory, with its Merkle tree."""

    def __init__(self) -> None:
        self.rows: list[LedgerRow] = []
        self.batches: list[int] = []
        self.fail_next = False
        self.tree = MemoryTree()
        self.heads: list[SignedTreeHead] = []

    def tree_head(self) -> tuple[int, bytes] | None:
        return (self.tree.size, self.tree.range.root()) if self.rows else None

    async def current_tree(self) -> tuple[int, bytes]:
        return self.tree.size, self.tree.range.root()

    async def entry(self, index: int) -> LedgerRow | None:
        return self.rows[index] if 0 <= index < len(self.rows) else None

    async def save_head(self, head: SignedTreeHead) -> None:
        self.heads.append(head)

    async def append_batch(self, entries: Sequence[PendingEntry]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise LedgerError("disk full (test)")
        prev = self.rows[-1].hash if self.rows else GENESIS
        for entry in entries:
            entry.error = None
            if entry.write is not None:
                try:
                    entry.write(None)
                except RowConflict as exc:  # only this entry's caller sees it
                    entry.error = exc
                    continue
            row = make_entry(len(self.rows), prev, entry.kind, entry.time_us, entry.data)
            self.rows.append(row)
            self.tree.append(row.body)
            entry.index = row.index
            entry.leaf = self.tree.node(0, row.index)
            prev = row.hash
        self.batches.append(len(entries))


class MemoryFraudStore:
    """``ports.FraudStore`` in memory, for tests and tools."""

    def __init__(self, owners: Mapping[str, str] | None = None) -> None:
        self.rows: dict[
            tuple[str, str], tuple[str, str, datetime]
        ] = {}  # (key, address) -> (account, network, at)
        self.owners = dict(owners or {})
        self.held: dict[str, HoldRecord] = {}

    async def sightings(
        self, *, key_id: str | None = None, account: str | None = None
    ) -> list[tuple[str, str]]:
        return [
            (address, network)
            for (key, address), (acct, network, _) in self.rows.items()
            if (key_id is None or key == key_id) and (account is None or acct == account)
        ]

    async def add_sightings(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        for key_id, account, address, network, at in rows:
            self.rows.setdefault((key_id, address), (account, network, at))

    async def owner(self, account: str) -> str | None:
        return self.owners.get(account)

    async def create_hold(
        self, hold: HoldRecord, entry: tuple[str, Mapping[str, object]] | None = None
    ) -> None:
        self.held[hold.id] = copy.copy(hold)

    async def hold(self, hold_id: str) -> HoldRecord | None:
        found = self.held.get(hold_id)
        return None if found is None else copy.copy(found)

    async def holds(self, *, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        found = [copy.copy(h) for h in self.held.values() if status is None or h.status is status]
        return found[:limit]
