"""Repositories: the SQL implementations of Bastion's ports, over :class:`~bastion.store.db.Database`."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError

from bastion.clock import from_us, to_us
from bastion.domain.credentials import CredentialPermissions
from bastion.domain.orders import OrderRequest, VenueOrder
from bastion.domain.principals import Scope
from bastion.errors import LedgerError
from bastion.ledger.chain import GENESIS, make_entry
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash, root_of
from bastion.ports import (
    KeyRecord,
    Ledger,
    LedgerRow,
    OrderRecord,
    OrderState,
    PendingEntry,
    RowConflict,
    RowWrite,
)
from bastion.store.db import Database
from bastion.store.tables import (
    accounts,
    alert_sinks,
    api_keys,
    ledger_entries,
    ledger_heads,
    ledger_keys,
    ledger_nodes,
    orders,
    paper_balances,
    paper_orders,
    policy_versions,
    subject_keys,
    trading_states,
    venue_credentials,
)
from bastion.vault.envelope import SealContext
from bastion.vault.keys import PURPOSE_KEY_HMAC
from bastion.vault.rotation import SealedRow
from bastion.vault.subjects import subject_context
from bastion.venues.paper.engine import PaperOrder
from bastion.venues.paper.store import AccountState, Balances


def alert_sink_context(sink_id: str) -> SealContext:
    """What an alert sink's sealed configuration is bound to."""
    return SealContext("", sink_id, "alert-sink")


_encode = msgspec.json.Encoder().encode

# Hot-path statements are built once: SQLAlchemy then reuses their compiled form and cache key,
# where building them per call cost more than executing them (measured: docs/benchmarks.md).
_KEY_BY_ID = select(api_keys).where(api_keys.c.key_id == bindparam("b_key_id"))
_ORDER_BY_ID = select(orders).where(orders.c.id == bindparam("b_id"))
_ORDER_BY_CLIENT_ID = select(orders).where(
    orders.c.account == bindparam("b_account"), orders.c.client_order_id == bindparam("b_client_order_id")
)
# The same statements as plain SQL for the SQLite fast path (Database.sqlite).
_KEY_COLUMNS = (
    "key_id",
    "account",
    "alg",
    "public_key",
    "scopes",
    "label",
    "created_us",
    "expires_us",
    "revoked_us",
    "secret_sealed",
    "allowed_cidrs",
    "last_used_us",
    "last_used_ip",
    "rotated_to",
)
_ORDER_COLUMNS = (
    "id",
    "account",
    "key_id",
    "client_order_id",
    "symbol",
    "fingerprint",
    "request",
    "state",
    "status",
    "venue_order_id",
    "reject_reason",
    "snapshot",
    "created_us",
    "updated_us",
)
_ORDER_STATE_COLUMNS = ("state", "status", "venue_order_id", "reject_reason", "snapshot", "updated_us")
_SQL_KEY_BY_ID = (
    "SELECT key_id, account, alg, public_key, scopes, label, created_us, expires_us, revoked_us, "
    "secret_sealed, allowed_cidrs, last_used_us, last_used_ip, rotated_to FROM api_keys WHERE key_id = ?"
)
_SQL_ORDER_SELECT = (
    "SELECT id, account, key_id, client_order_id, symbol, fingerprint, request, state, status, "
    "venue_order_id, reject_reason, snapshot, created_us, updated_us FROM orders "
)
_SQL_ORDER_BY_ID = _SQL_ORDER_SELECT + "WHERE id = ?"
_SQL_ORDER_BY_CLIENT_ID = _SQL_ORDER_SELECT + "WHERE account = ? AND client_order_id = ?"
_SQL_INSERT_ORDER = (
    "INSERT INTO orders (id, account, key_id, client_order_id, symbol, fingerprint, request, state, status, "
    "venue_order_id, reject_reason, snapshot, created_us, updated_us) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_SQL_UPDATE_ORDER = (
    "UPDATE orders SET state = ?, status = ?, venue_order_id = ?, reject_reason = ?, snapshot = ?, "
    "updated_us = ? WHERE id = ?"
)
_SQL_LEDGER_HEAD = "SELECT idx, hash FROM ledger_entries ORDER BY idx DESC LIMIT 1"
_SQL_INSERT_LEDGER = "INSERT INTO ledger_entries (idx, body, hash) VALUES (?, ?, ?)"
_SQL_NODE = "SELECT hash FROM ledger_nodes WHERE level = ? AND idx = ?"
_SQL_INSERT_NODES = "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)"
_NODE = select(ledger_nodes.c.hash).where(
    ledger_nodes.c.level == bindparam("b_level"), ledger_nodes.c.idx == bindparam("b_idx")
)

# INSERT ... ON CONFLICT DO NOTHING: a taken client order id writes nothing (rowcount 0).
_INSERT_ORDER_OR_SKIP = {
    "sqlite": sqlite_insert(orders).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(orders).on_conflict_do_nothing(),
}
_INSERT_HEAD_OR_SKIP = {
    "sqlite": sqlite_insert(ledger_heads).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(ledger_heads).on_conflict_do_nothing(),
}
_INSERT_POLICY_OR_SKIP = {
    "sqlite": sqlite_insert(policy_versions).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(policy_versions).on_conflict_do_nothing(),
}
_UPDATE_ORDER = update(orders).where(orders.c.id == bindparam("b_id"))
_LEDGER_HEAD = (
    select(ledger_entries.c.idx, ledger_entries.c.hash).order_by(ledger_entries.c.idx.desc()).limit(1)
)
_INSERT_LEDGER = insert(ledger_entries)
_RECORD_KEY_USE = update(api_keys).where(api_keys.c.key_id == bindparam("b_key_id"))
_UPDATE_BALANCE = update(paper_balances).where(
    paper_balances.c.account == bindparam("b_account"), paper_balances.c.asset == bindparam("b_asset")
)
_INSERT_BALANCE = insert(paper_balances)
_UPDATE_PAPER_ORDER = update(paper_orders).where(paper_orders.c.venue_order_id == bindparam("b_id"))
_INSERT_PAPER_ORDER = insert(paper_orders)


class SqlAccounts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, now: datetime) -> bool:
        def run(conn: Connection) -> None:
            conn.execute(insert(accounts).values(name=name, created_us=to_us(now)))

        try:
            await self._db.write(run)
        except IntegrityError:
            return False
        return True

    async def exists(self, name: str) -> bool:
        query = select(accounts.c.name).where(accounts.c.name == name)
        return await self._db.read(lambda conn: conn.execute(query).first() is not None)


def _key_from_row(m: Mapping[Any, Any]) -> KeyRecord:
    return KeyRecord(
        key_id=m["key_id"],
        account=m["account"],
        alg=m["alg"],
        public_key=bytes(m["public_key"]),
        scopes=frozenset(Scope(s) for s in str(m["scopes"]).split(",")),
        label=m["label"],
        created_at=from_us(m["created_us"]),
        expires_at=None if m["expires_us"] is None else from_us(m["expires_us"]),
        revoked_at=None if m["revoked_us"] is None else from_us(m["revoked_us"]),
        secret_sealed=None if m["secret_sealed"] is None else bytes(m["secret_sealed"]),
        allowed_cidrs=tuple(c for c in str(m["allowed_cidrs"] or "").split(",") if c),
        last_used_at=None if m["last_used_us"] is None else from_us(m["last_used_us"]),
        last_used_ip=m["last_used_ip"],
        rotated_to=m["rotated_to"],
    )


class SqlKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_key(self, key_id: str) -> KeyRecord | None:
        def run(conn: Connection) -> KeyRecord | None:
            raw = self._db.sqlite(conn)
            if raw is not None:
                found = raw.execute(_SQL_KEY_BY_ID, (key_id,)).fetchone()
                return None if found is None else _key_from_row(dict(zip(_KEY_COLUMNS, found, strict=True)))
            row = conn.execute(_KEY_BY_ID, {"b_key_id": key_id}).first()
            return None if row is None else _key_from_row(row._mapping)

        return await self._db.read(run)

    @staticmethod
    def _values(record: KeyRecord) -> dict[str, object]:
        return {
            "key_id": record.key_id,
            "account": record.account,
            "alg": record.alg,
            "public_key": record.public_key,
            "scopes": ",".join(sorted(s.value for s in record.scopes)),
            "label": record.label,
            "created_us": to_us(record.created_at),
            "expires_us": None if record.expires_at is None else to_us(record.expires_at),
            "revoked_us": None,
            "secret_sealed": record.secret_sealed,
            "allowed_cidrs": ",".join(record.allowed_cidrs),
        }

    async def create(self, record: KeyRecord) -> None:
        values = self._values(record)
        await self._db.write(lambda conn: conn.execute(insert(api_keys).values(**values)))

    async def forget_usage(self, account: str) -> None:
        """Drop the last-use addresses of an account's keys (erasure)."""
        statement = update(api_keys).where(api_keys.c.account == account).values(last_used_ip=None)
        await self._db.write(lambda conn: conn.execute(statement))

    @staticmethod
    def scopes_write(key_id: str, scopes: frozenset[Scope]) -> RowWrite:
        """A row write that sets a key's scopes (to commit with the ledger entry recording it)."""
        text = ",".join(sorted(s.value for s in scopes))
        query = update(api_keys).where(api_keys.c.key_id == key_id).values(scopes=text)
        return lambda conn: conn.execute(query)

    async def rotate(self, old: KeyRecord, new: KeyRecord, old_expires_at: datetime) -> None:
        """Insert ``new`` and let ``old`` expire at ``old_expires_at``, in one transaction."""
        values = self._values(new)

        def run(conn: Connection) -> None:
            conn.execute(insert(api_keys).values(**values))
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == old.key_id)
                .values(expires_us=to_us(old_expires_at), rotated_to=new.key_id)
            )

        await self._db.write(run)

    async def set_allowed_cidrs(self, key_id: str, cidrs: tuple[str, ...]) -> bool:
        statement = update(api_keys).where(api_keys.c.key_id == key_id).values(allowed_cidrs=",".join(cidrs))
        return await self._db.write(lambda conn: bool(conn.execute(statement).rowcount))

    async def record_usage(self, usage: Mapping[str, tuple[datetime, str]]) -> None:
        """Last use per key, written in one transaction (called in batches, off the request path)."""
        rows = [
            {"b_key_id": k, "last_used_us": to_us(when), "last_used_ip": ip}
            for k, (when, ip) in usage.items()
        ]
        if rows:
            await self._db.write(lambda conn: conn.execute(_RECORD_KEY_USE, rows))

    async def list(self, account: str | None = None) -> list[KeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_us)
        if account is not None:
            query = query.where(api_keys.c.account == account)
        return await self._db.read(lambda conn: [_key_from_row(r._mapping) for r in conn.execute(query)])

    async def revoke(self, key_id: str, now: datetime) -> bool:
        statement = (
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_us.is_(None))
            .values(revoked_us=to_us(now))
        )
        return await self._db.write(lambda conn: bool(conn.execute(statement).rowcount))


def _order_from_row(m: Mapping[Any, Any]) -> OrderRecord:
    snapshot = m["snapshot"]
    return OrderRecord(
        id=m["id"],
        account=m["account"],
        key_id=m["key_id"],
        request=msgspec.json.decode(m["request"], type=OrderRequest),
        fingerprint=m["fingerprint"],
        state=OrderState(m["state"]),
        created_at=from_us(m["created_us"]),
        updated_at=from_us(m["updated_us"]),
        venue_order_id=m["venue_order_id"],
        reject_reason=m["reject_reason"],
        snapshot=None if snapshot is None else msgspec.json.decode(snapshot, type=VenueOrder),
    )


def _order_values(record: OrderRecord) -> dict[str, object]:
    return {
        "state": record.state.value,
        "status": record.status,
        "venue_order_id": record.venue_order_id,
        "reject_reason": record.reject_reason,
        "snapshot": None if record.snapshot is None else _encode(record.snapshot).decode(),
        "updated_us": to_us(record.updated_at),
    }


class SqlOrderStore:
    """Reads go straight to the database; writes go through the journal (the ledger writer),
    each in the same transaction as the ledger entry that records it."""

    def __init__(self, db: Database, journal: Ledger) -> None:
        self._db = db
        self._journal = journal
        # Records whose queued save is not yet durable, so reads in this process see them.  Copies
        # are shallow: a record's request and snapshot are frozen, only its own fields change.
        self._queued: dict[str, OrderRecord] = {}

    async def _one(
        self, query: Select[tuple[object, ...]], params: dict[str, str], sql: str, args: tuple[str, ...]
    ) -> OrderRecord | None:
        def run(conn: Connection) -> OrderRecord | None:
            raw = self._db.sqlite(conn)
            if raw is not None:
                found = raw.execute(sql, args).fetchone()
                return (
                    None if found is None else _order_from_row(dict(zip(_ORDER_COLUMNS, found, strict=True)))
                )
            row = conn.execute(query, params).first()
            return None if row is None else _order_from_row(row._mapping)

        return await self._db.read(run)

    async def get(self, order_id: str) -> OrderRecord | None:
        queued = self._queued.get(order_id)
        if queued is not None:
            return copy.copy(queued)
        return await self._one(_ORDER_BY_ID, {"b_id": order_id}, _SQL_ORDER_BY_ID, (order_id,))

    async def find(self, account: str, client_order_id: str) -> OrderRecord | None:
        for queued in self._queued.values():
            if queued.account == account and queued.request.client_order_id == client_order_id:
                return copy.copy(queued)
        return await self._one(
            _ORDER_BY_CLIENT_ID,
            {"b_account": account, "b_client_order_id": client_order_id},
            _SQL_ORDER_BY_CLIENT_ID,
            (account, client_order_id),
        )

    async def insert(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> bool:
        values = _order_values(record) | {
            "id": record.id,
            "account": record.account,
            "key_id": record.key_id,
            "client_order_id": record.request.client_order_id,
            "symbol": record.request.symbol,
            "fingerprint": record.fingerprint,
            "request": _encode(record.request).decode(),
            "created_us": to_us(record.created_at),
        }

        def write(conn: Connection) -> None:
            raw = self._db.sqlite(conn)
            if raw is not None:
                written = raw.execute(_SQL_INSERT_ORDER, tuple(values[c] for c in _ORDER_COLUMNS)).rowcount
            else:
                written = conn.execute(_INSERT_ORDER_OR_SKIP[conn.dialect.name], values).rowcount
            if not written:
                raise RowConflict(record.request.client_order_id)

        try:
            await self._journal.append(*entry, write=write)
        except RowConflict:
            return False
        return True

    async def save(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> None:
        await self.save_later(record, entry)

    def save_later(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> Awaitable[int]:
        values = _order_values(record) | {"b_id": record.id}
        args = (*(values[c] for c in _ORDER_STATE_COLUMNS), record.id)
        snapshot = copy.copy(record)

        def write(conn: Connection) -> None:
            raw = self._db.sqlite(conn)
            if raw is not None:
                raw.execute(_SQL_UPDATE_ORDER, args)
            else:
                conn.execute(_UPDATE_ORDER, values)

        self._queued[record.id] = snapshot
        done = asyncio.ensure_future(self._journal.enqueue(*entry, write=write))

        def forget(_: object) -> None:
            if self._queued.get(record.id) is snapshot:
                del self._queued[record.id]

        done.add_done_callback(forget)
        return done

    async def list(
        self, account: str, *, symbol: str | None, statuses: Sequence[str] | None, limit: int
    ) -> Sequence[OrderRecord]:
        query = select(orders).where(orders.c.account == account)
        if symbol is not None:
            query = query.where(orders.c.symbol == symbol)
        if statuses is not None:
            query = query.where(orders.c.status.in_(list(statuses)))
        query = query.order_by(orders.c.created_us.desc(), orders.c.id.desc()).limit(limit)
        return await self._db.read(lambda conn: [_order_from_row(r._mapping) for r in conn.execute(query)])

    async def all_records(self) -> Sequence[OrderRecord]:
        """Every order, oldest first (the risk book is rebuilt from them at start-up)."""
        query = select(orders).order_by(orders.c.created_us, orders.c.id)
        return await self._db.read(lambda conn: [_order_from_row(r._mapping) for r in conn.execute(query)])

    async def open_records(
        self, *, account: str | None = None, key_id: str | None = None
    ) -> Sequence[OrderRecord]:
        """Orders the venue holds open as last seen (or never confirmed), for the kill switch."""
        query = select(orders).where(orders.c.status.in_(["new", "partially_filled", "pending"]))
        if account is not None:
            query = query.where(orders.c.account == account)
        if key_id is not None:
            query = query.where(orders.c.key_id == key_id)
        query = query.order_by(orders.c.created_us, orders.c.id)
        return await self._db.read(lambda conn: [_order_from_row(r._mapping) for r in conn.execute(query)])


class SqlPolicyStore:
    """Policy documents, one row per version; a change and its ledger entry commit together."""

    def __init__(self, db: Database, journal: Ledger) -> None:
        self._db = db
        self._journal = journal

    async def current(self) -> dict[str, tuple[int, dict[str, object]]]:
        """subject -> (version, document as JSON data) for every subject's newest version."""

        def run(conn: Connection) -> dict[str, tuple[int, dict[str, object]]]:
            newest = (
                select(policy_versions.c.subject, func.max(policy_versions.c.version).label("v"))
                .group_by(policy_versions.c.subject)
                .subquery()
            )
            query = select(policy_versions).join(
                newest,
                (policy_versions.c.subject == newest.c.subject) & (policy_versions.c.version == newest.c.v),
            )
            return {r.subject: (int(r.version), msgspec.json.decode(r.document)) for r in conn.execute(query)}

        return await self._db.read(run)

    async def stamp(self) -> tuple[int, int]:
        """(versions stored, newest creation time): changes whenever any policy does."""
        query = select(func.count(), func.coalesce(func.max(policy_versions.c.created_us), 0))
        row = await self._db.read(lambda conn: conn.execute(query).one())
        return int(row[0]), int(row[1])

    async def history(self, subject: str) -> list[tuple[int, datetime, str]]:
        query = (
            select(policy_versions.c.version, policy_versions.c.created_us, policy_versions.c.actor)
            .where(policy_versions.c.subject == subject)
            .order_by(policy_versions.c.version)
        )
        return await self._db.read(
            lambda conn: [(int(r.version), from_us(r.created_us), r.actor) for r in conn.execute(query)]
        )

    async def put(
        self,
        subject: str,
        document: Mapping[str, object],
        expected_version: int,
        *,
        actor: str,
        now: datetime,
        entry: Mapping[str, object],
        also: RowWrite | None = None,
    ) -> int:
        """Store version ``expected_version + 1`` (and run ``also``) with the entry, atomically;
        raises RowConflict, having written nothing, if another change took that version."""
        version = expected_version + 1
        values = {
            "subject": subject,
            "version": version,
            "document": _encode(document).decode(),
            "created_us": to_us(now),
            "actor": actor,
        }

        def write(conn: Connection) -> None:
            if not conn.execute(_INSERT_POLICY_OR_SKIP[conn.dialect.name], values).rowcount:
                raise RowConflict(subject)
            if also is not None:
                also(conn)

        await self._journal.append("policy.changed", dict(entry) | {"version": version}, write=write)
        return version


class SqlTradingStateStore:
    def __init__(self, db: Database, journal: Ledger) -> None:
        self._db = db
        self._journal = journal

    async def all(self) -> list[tuple[str, str, str]]:
        query = select(trading_states.c.level, trading_states.c.subject, trading_states.c.state)
        return await self._db.read(lambda conn: [(r.level, r.subject, r.state) for r in conn.execute(query)])

    async def put(
        self, level: str, subject: str, state: str, *, actor: str, now: datetime, entry: Mapping[str, object]
    ) -> None:
        """Store one level's state (active removes the row) with its ledger entry, atomically."""

        def write(conn: Connection) -> None:
            where = (trading_states.c.level == level) & (trading_states.c.subject == subject)
            conn.execute(trading_states.delete().where(where))
            if state != "active":
                conn.execute(
                    insert(trading_states).values(
                        level=level, subject=subject, state=state, updated_us=to_us(now), actor=actor
                    )
                )

        await self._journal.append("killswitch.changed", entry, write=write)


def _stored_bytes(value: object) -> bytes:
    """A BLOB as bytes, whatever someone stored there instead: verification, not this read,
    must be what notices tampering (an edit can turn a BLOB into TEXT or a number)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


class _Nodes:
    """The Merkle tree's stored perfect-subtree hashes, read on one connection."""

    def __init__(self, db: Database, conn: Connection) -> None:
        self._raw = db.sqlite(conn)
        self._conn = conn

    def node(self, level: int, index: int) -> bytes:
        if self._raw is not None:
            found = self._raw.execute(_SQL_NODE, (level, index)).fetchone()
        else:
            found = self._conn.execute(_NODE, {"b_level": level, "b_idx": index}).first()
        if found is None:
            raise LedgerError(f"ledger tree node {level}/{index} is missing")
        return _stored_bytes(found[0])


@dataclass
class _Head:
    next_index: int
    prev: bytes
    tree: CompactRange


class SqlLedgerStore:
    """Chains and writes batches after the head, in one transaction, with the Merkle tree's new
    nodes (RFC 9162; ``ledger/merkle.py``).  The head (and the tree's compact range) is cached;
    several processes may write (the server and the CLI), and a batch that finds its index
    taken (a primary-key conflict) is rolled back whole, re-chained on the stored head and
    retried, its row writes with it."""

    def __init__(self, db: Database, attempts: int = 20) -> None:
        self._db = db
        self._attempts = attempts
        self._head: _Head | None = None

    def _load_head(self, conn: Connection) -> _Head:
        raw = self._db.sqlite(conn)
        stored = (
            raw.execute(_SQL_LEDGER_HEAD).fetchone()
            if raw is not None
            else conn.execute(_LEDGER_HEAD).first()
        )
        if stored is None:
            return _Head(0, GENESIS, CompactRange())
        size = int(stored[0]) + 1
        return _Head(size, _stored_bytes(stored[1]), CompactRange.load(_Nodes(self._db, conn), size))

    def _append(self, conn: Connection, entries: Sequence[PendingEntry]) -> tuple[list[LedgerRow], _Head]:
        for entry in entries:
            entry.error = None
            if entry.write is not None:
                try:
                    entry.write(conn)
                except RowConflict as exc:  # it wrote nothing; skip its entry
                    entry.error = exc
        raw = self._db.sqlite(conn)
        if self._head is None:
            self._head = self._load_head(conn)
        index, prev = self._head.next_index, self._head.prev
        tree = CompactRange(self._head.tree.size, list(self._head.tree.peaks))  # kept only if this commits
        rows: list[LedgerRow] = []
        nodes: list[tuple[int, int, bytes]] = []
        for entry in entries:
            if entry.error is not None:
                continue
            row = make_entry(index, prev, entry.kind, entry.time_us, entry.data)
            rows.append(row)
            made = tree.append(leaf_hash(row.body))
            entry.leaf = made[0][2]
            nodes += made
            prev, index = row.hash, index + 1
        if rows and raw is not None:
            raw.executemany(_SQL_INSERT_LEDGER, [(r.index, r.body, r.hash) for r in rows])
            raw.executemany(_SQL_INSERT_NODES, nodes)
        elif rows:
            conn.execute(_INSERT_LEDGER, [{"idx": r.index, "body": r.body, "hash": r.hash} for r in rows])
            conn.execute(insert(ledger_nodes), [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in nodes])
        return rows, _Head(index, prev, tree)

    async def append_batch(self, entries: Sequence[PendingEntry]) -> None:
        for attempt in range(self._attempts):
            try:
                rows, head = await self._db.write(lambda conn: self._append(conn, entries))
            except (IntegrityError, OperationalError, sqlite3.IntegrityError, sqlite3.OperationalError):
                # Another writer moved the head (a primary-key conflict; raw sqlite3 statements
                # raise sqlite3's own errors) or held the lock too long: re-read and retry.
                self._head = None
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            self._head = head
            written = iter(rows)
            for entry in entries:
                if entry.error is None:
                    entry.index = next(written).index
            return
        self._head = None
        raise LedgerError("could not append to the ledger: the database stayed busy")

    def tree_head(self) -> tuple[int, bytes] | None:
        """(tree size, root hash) as of this process's last commit, or None before any."""
        if self._head is None:
            return None
        return self._head.tree.size, self._head.tree.root()

    async def current_tree(self) -> tuple[int, bytes]:
        """(tree size, root hash) as stored now."""

        def run(conn: Connection) -> tuple[int, bytes]:
            head = self._load_head(conn)
            return head.tree.size, head.tree.root()

        return await self._db.read(run)

    async def root(self, size: int) -> bytes:
        return await self._db.read(lambda conn: root_of(_Nodes(self._db, conn), size))

    async def inclusion(self, index: int, size: int) -> list[bytes]:
        return await self._db.read(lambda conn: inclusion_proof(_Nodes(self._db, conn), index, size))

    async def consistency(self, first: int, second: int) -> list[bytes]:
        return await self._db.read(lambda conn: consistency_proof(_Nodes(self._db, conn), first, second))

    async def entry(self, index: int) -> LedgerRow | None:
        query = select(ledger_entries).where(ledger_entries.c.idx == index)

        def run(conn: Connection) -> LedgerRow | None:
            r = conn.execute(query).first()
            return None if r is None else LedgerRow(r.idx, _stored_bytes(r.body), _stored_bytes(r.hash))

        return await self._db.read(run)

    # -- signed tree heads and the ledger's key ---------------------------------------------
    async def save_head(self, head: SignedTreeHead) -> None:
        values = {
            "tree_size": head.tree_size,
            "root_hash": head.root_hash,
            "timestamp_us": head.timestamp_us,
            "signature": head.signature,
            "key_version": head.key_version,
        }
        await self._db.write(lambda conn: conn.execute(_INSERT_HEAD_OR_SKIP[conn.dialect.name], values))

    async def heads(self) -> list[SignedTreeHead]:
        query = select(ledger_heads).order_by(ledger_heads.c.tree_size)
        return await self._db.read(
            lambda conn: [
                SignedTreeHead(
                    int(r.tree_size),
                    _stored_bytes(r.root_hash),
                    int(r.timestamp_us),
                    _stored_bytes(r.signature),
                    int(r.key_version),
                )
                for r in conn.execute(query)
            ]
        )

    async def ledger_keys(self) -> list[tuple[int, bytes, bytes]]:
        """(version, raw Ed25519 public key, sealed private key), oldest first."""
        query = select(ledger_keys).order_by(ledger_keys.c.version)
        return await self._db.read(
            lambda conn: [
                (int(r.version), _stored_bytes(r.public_key), _stored_bytes(r.sealed_private))
                for r in conn.execute(query)
            ]
        )

    async def add_ledger_key(self, version: int, public: bytes, sealed: bytes, now: datetime) -> bool:
        """False (nothing written) when that version exists already (another process made it)."""
        values = {"version": version, "public_key": public, "sealed_private": sealed}
        values["created_us"] = to_us(now)
        try:
            await self._db.write(lambda conn: conn.execute(insert(ledger_keys).values(**values)))
        except IntegrityError:
            return False
        return True

    async def rows(self, chunk: int = 5000) -> AsyncIterator[LedgerRow]:
        start = 0
        while True:
            query = (
                select(ledger_entries)
                .where(ledger_entries.c.idx >= start)
                .order_by(ledger_entries.c.idx)
                .limit(chunk)
            )

            def run(conn: Connection) -> list[LedgerRow]:
                rows = conn.execute(query)  # noqa: B023
                return [LedgerRow(r.idx, _stored_bytes(r.body), _stored_bytes(r.hash)) for r in rows]

            batch = await self._db.read(run)  # runs now, inside this iteration
            if not batch:
                return
            for row in batch:
                yield row
            start = batch[-1].index + 1

    async def count(self) -> int:
        query = select(func.count()).select_from(ledger_entries)
        return await self._db.read(lambda conn: int(conn.execute(query).scalar_one()))


@dataclass(frozen=True, slots=True)
class CredentialRow:
    id: str
    account: str
    venue: str
    fingerprint: str
    permissions: CredentialPermissions
    created_at: datetime


class SqlCredentialStore:
    """Venue credentials: only their sealed form, a fingerprint and the venue's report."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: CredentialRow, sealed: bytes) -> None:
        values = {
            "id": row.id,
            "account": row.account,
            "venue": row.venue,
            "sealed": sealed,
            "fingerprint": row.fingerprint,
            "permissions": _encode(row.permissions).decode(),
            "created_us": to_us(row.created_at),
        }
        await self._db.write(lambda conn: conn.execute(insert(venue_credentials).values(**values)))

    async def remove(self, credential_id: str) -> CredentialRow | None:
        """Delete a credential (its sealed secret with it); the row as it was, or None."""
        found = [r for r in await self.list() if r.id == credential_id]
        if not found:
            return None

        def run(conn: Connection) -> None:
            conn.execute(delete(venue_credentials).where(venue_credentials.c.id == credential_id))

        await self._db.write(run)
        return found[0]

    async def newest_sealed(self, account: str, venue: str) -> tuple[str, bytes] | None:
        """The id and sealed secret of ``account``'s newest credential for ``venue``."""
        query = (
            select(venue_credentials.c.id, venue_credentials.c.sealed)
            .where(venue_credentials.c.account == account, venue_credentials.c.venue == venue)
            .order_by(venue_credentials.c.created_us.desc(), venue_credentials.c.id.desc())
            .limit(1)
        )

        def run(conn: Connection) -> tuple[str, bytes] | None:
            row = conn.execute(query).first()
            return None if row is None else (row.id, _stored_bytes(row.sealed))

        return await self._db.read(run)

    async def list(self, account: str | None = None) -> list[CredentialRow]:
        query = select(venue_credentials).order_by(venue_credentials.c.created_us)
        if account is not None:
            query = query.where(venue_credentials.c.account == account)

        def run(conn: Connection) -> list[CredentialRow]:
            return [
                CredentialRow(
                    r.id,
                    r.account,
                    r.venue,
                    r.fingerprint,
                    msgspec.json.decode(r.permissions, type=CredentialPermissions),
                    from_us(r.created_us),
                )
                for r in conn.execute(query)
            ]

        return await self._db.read(run)


class SqlSubjectKeys:
    """Per-subject data keys (``vault/subjects.py``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, subject: str) -> tuple[bool, bytes | None]:
        query = select(subject_keys.c.sealed_key).where(subject_keys.c.subject == subject)

        def run(conn: Connection) -> tuple[bool, bytes | None]:
            row = conn.execute(query).first()
            if row is None:
                return False, None
            return True, None if row.sealed_key is None else _stored_bytes(row.sealed_key)

        return await self._db.read(run)

    async def create(self, subject: str, sealed: bytes, now: datetime) -> bool:
        values = {"subject": subject, "sealed_key": sealed, "created_us": to_us(now)}
        try:
            await self._db.write(lambda conn: conn.execute(insert(subject_keys).values(**values)))
        except IntegrityError:
            return False
        return True

    async def erase(self, subject: str, now: datetime) -> bool:
        """Destroy the key: the row stays (so the subject is never given a new key), keyless."""
        statement = (
            update(subject_keys)
            .where(subject_keys.c.subject == subject, subject_keys.c.sealed_key.is_not(None))
            .values(sealed_key=None, erased_us=to_us(now))
        )
        exists, _ = await self.load(subject)
        if not exists:
            values = {
                "subject": subject,
                "sealed_key": None,
                "created_us": to_us(now),
                "erased_us": to_us(now),
            }
            await self._db.write(lambda conn: conn.execute(insert(subject_keys).values(**values)))
            return True
        return bool(await self._db.write(lambda conn: conn.execute(statement).rowcount))


def ledger_key_context(version: int) -> SealContext:
    """What the ledger's signing key is sealed to (no account: it is the installation's)."""
    return SealContext("", f"ledger-key-{version}", "ledger-signing-key")


class SqlSealedRows:
    """Every value the vault sealed, for master-key rotation (``vault.rotation.SealedRows``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sealed_rows(self) -> list[SealedRow]:
        keys = select(api_keys.c.key_id, api_keys.c.account, api_keys.c.secret_sealed).where(
            api_keys.c.secret_sealed.is_not(None)
        )
        creds = select(
            venue_credentials.c.id,
            venue_credentials.c.account,
            venue_credentials.c.venue,
            venue_credentials.c.sealed,
        )

        def run(conn: Connection) -> list[SealedRow]:
            rows = [
                SealedRow(
                    "api_keys",
                    r.key_id,
                    SealContext(r.account, r.key_id, PURPOSE_KEY_HMAC),
                    bytes(r.secret_sealed),
                )
                for r in conn.execute(keys)
            ]
            rows += [
                SealedRow(
                    "venue_credentials",
                    r.id,
                    SealContext(r.account, r.id, f"venue-credential:{r.venue}"),
                    bytes(r.sealed),
                )
                for r in conn.execute(creds)
            ]
            rows += [
                SealedRow("subject_keys", r.subject, subject_context(r.subject), bytes(r.sealed_key))
                for r in conn.execute(
                    select(subject_keys.c.subject, subject_keys.c.sealed_key).where(
                        subject_keys.c.sealed_key.is_not(None)
                    )
                )
            ]
            rows += [
                SealedRow(
                    "ledger_keys", str(r.version), ledger_key_context(int(r.version)), bytes(r.sealed_private)
                )
                for r in conn.execute(select(ledger_keys.c.version, ledger_keys.c.sealed_private))
            ]
            rows += [
                SealedRow("alert_sinks", r.id, alert_sink_context(r.id), bytes(r.sealed_config))
                for r in conn.execute(select(alert_sinks.c.id, alert_sinks.c.sealed_config))
            ]
            return rows

        return await self._db.read(run)

    def replace_write(self, row: SealedRow, new: bytes) -> RowWrite:
        if row.table == "api_keys":
            statement = (
                update(api_keys)
                .where(api_keys.c.key_id == row.row_id, api_keys.c.secret_sealed == row.sealed)
                .values(secret_sealed=new)
            )
        elif row.table == "subject_keys":
            statement = (
                update(subject_keys)
                .where(subject_keys.c.subject == row.row_id, subject_keys.c.sealed_key == row.sealed)
                .values(sealed_key=new)
            )
        elif row.table == "alert_sinks":
            statement = (
                update(alert_sinks)
                .where(alert_sinks.c.id == row.row_id, alert_sinks.c.sealed_config == row.sealed)
                .values(sealed_config=new)
            )
        elif row.table == "ledger_keys":
            statement = (
                update(ledger_keys)
                .where(ledger_keys.c.version == int(row.row_id), ledger_keys.c.sealed_private == row.sealed)
                .values(sealed_private=new)
            )
        else:
            statement = (
                update(venue_credentials)
                .where(venue_credentials.c.id == row.row_id, venue_credentials.c.sealed == row.sealed)
                .values(sealed=new)
            )

        def write(conn: Connection) -> None:
            if not conn.execute(statement).rowcount:
                raise RowConflict(row.row_id)

        return write


class SqlPaperStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def accounts(self) -> list[str]:
        query = select(paper_balances.c.account).distinct()
        return await self._db.read(lambda conn: sorted(r.account for r in conn.execute(query)))

    async def load(self, account: str) -> AccountState | None:
        def run(conn: Connection) -> AccountState | None:
            balances = conn.execute(select(paper_balances).where(paper_balances.c.account == account)).all()
            if not balances:
                return None
            rows = conn.execute(select(paper_orders.c.data).where(paper_orders.c.account == account)).all()
            return AccountState(
                {b.asset: (Decimal(b.free), Decimal(b.locked)) for b in balances},
                [msgspec.json.decode(r.data, type=PaperOrder) for r in rows],
            )

        return await self._db.read(run)

    async def max_sequence(self) -> int:
        query = select(func.max(paper_orders.c.venue_order_id))
        top = await self._db.read(lambda conn: conn.execute(query).scalar())
        return 0 if top is None else int(str(top)[1:])

    async def save(self, balances: Mapping[str, Balances], orders_: Sequence[PaperOrder]) -> None:
        balance_rows = [
            {"b_account": account, "b_asset": a, "free": str(f), "locked": str(lk)}
            for account, values in balances.items()
            for a, (f, lk) in values.items()
        ]
        order_rows = [
            {
                "b_id": o.venue_order_id,
                "account": o.account,
                "client_order_id": o.client_order_id,
                "data": _encode(o).decode(),
            }
            for o in orders_
        ]

        def run(conn: Connection) -> None:
            for row in balance_rows:  # update in place; insert the first time an asset appears
                if not conn.execute(_UPDATE_BALANCE, row).rowcount:
                    conn.execute(
                        _INSERT_BALANCE,
                        {
                            "account": row["b_account"],
                            "asset": row["b_asset"],
                            "free": row["free"],
                            "locked": row["locked"],
                        },
                    )
            for row in order_rows:
                if not conn.execute(_UPDATE_PAPER_ORDER, row).rowcount:
                    conn.execute(
                        _INSERT_PAPER_ORDER,
                        {
                            "venue_order_id": row["b_id"],
                            "account": row["account"],
                            "client_order_id": row["client_order_id"],
                            "data": row["data"],
                        },
                    )

        await self._db.write(run)
