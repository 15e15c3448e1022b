"""Repositories: the SQL implementations of Bastion's ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import from_us, to_us
from bastion.domain.orders import OrderRequest, VenueOrder
from bastion.domain.principals import Scope
from bastion.errors import LedgerError
from bastion.ledger.chain import GENESIS, make_entry
from bastion.ports import KeyRecord, LedgerRow, OrderRecord, OrderState, PendingEntry
from bastion.store.tables import accounts, api_keys, ledger_entries, orders, paper_balances, paper_orders
from bastion.venues.paper.engine import PaperOrder
from bastion.venues.paper.store import AccountState, Balances

_encode = msgspec.json.Encoder().encode


class SqlAccounts:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, now: datetime) -> bool:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(accounts).values(name=name, created_us=to_us(now)))
        except IntegrityError:
            return False
        return True

    async def exists(self, name: str) -> bool:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts.c.name).where(accounts.c.name == name))).first()
        return row is not None

    async def names(self) -> list[str]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(accounts.c.name).order_by(accounts.c.name))).all()
        return [r.name for r in rows]


def _key_from_row(row: Row[tuple[object, ...]]) -> KeyRecord:
    m = row._mapping
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
    )


class SqlKeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return None if row is None else _key_from_row(row)

    async def create(self, record: KeyRecord) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    key_id=record.key_id,
                    account=record.account,
                    alg=record.alg,
                    public_key=record.public_key,
                    scopes=",".join(sorted(s.value for s in record.scopes)),
                    label=record.label,
                    created_us=to_us(record.created_at),
                    expires_us=None if record.expires_at is None else to_us(record.expires_at),
                    revoked_us=None,
                )
            )

    async def list(self, account: str | None = None) -> list[KeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_us)
        if account is not None:
            query = query.where(api_keys.c.account == account)
        async with self._engine.connect() as conn:
            return [_key_from_row(r) for r in (await conn.execute(query)).all()]

    async def revoke(self, key_id: str, now: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_us.is_(None))
                .values(revoked_us=to_us(now))
            )
        return bool(result.rowcount)


def _order_from_row(row: Row[tuple[object, ...]]) -> OrderRecord:
    m = row._mapping
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
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, order_id: str) -> OrderRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
        return None if row is None else _order_from_row(row)

    async def find(self, account: str, client_order_id: str) -> OrderRecord | None:
        query = select(orders).where(orders.c.account == account, orders.c.client_order_id == client_order_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _order_from_row(row)

    async def insert(self, record: OrderRecord) -> bool:
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
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(orders).values(**values))
        except IntegrityError:
            return False
        return True

    async def save(self, record: OrderRecord) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(orders).where(orders.c.id == record.id).values(**_order_values(record)))

    async def list(
        self, account: str, *, symbol: str | None, statuses: Sequence[str] | None, limit: int
    ) -> Sequence[OrderRecord]:
        query = select(orders).where(orders.c.account == account)
        if symbol is not None:
            query = query.where(orders.c.symbol == symbol)
        if statuses is not None:
            query = query.where(orders.c.status.in_(list(statuses)))
        query = query.order_by(orders.c.created_us.desc(), orders.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_order_from_row(r) for r in (await conn.execute(query)).all()]


class SqlLedgerStore:
    """Chains and writes batches after the stored head.  Several processes may write: a batch
    that loses the race for an index (primary-key conflict) is re-chained and retried."""

    def __init__(self, engine: AsyncEngine, attempts: int = 20) -> None:
        self._engine = engine
        self._attempts = attempts

    async def append_batch(self, entries: Sequence[PendingEntry]) -> None:
        for attempt in range(self._attempts):
            try:
                async with self._engine.begin() as conn:
                    head = (
                        await conn.execute(
                            select(ledger_entries.c.idx, ledger_entries.c.hash)
                            .order_by(ledger_entries.c.idx.desc())
                            .limit(1)
                        )
                    ).first()
                    index, prev = (0, GENESIS) if head is None else (head.idx + 1, bytes(head.hash))
                    rows: list[LedgerRow] = []
                    for entry in entries:
                        row = make_entry(index, prev, entry.kind, entry.time_us, entry.data)
                        rows.append(row)
                        prev, index = row.hash, index + 1
                    await conn.execute(
                        insert(ledger_entries),
                        [{"idx": r.index, "body": r.body, "hash": r.hash} for r in rows],
                    )
            except (IntegrityError, OperationalError):
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            for entry, row in zip(entries, rows, strict=True):
                entry.index = row.index
            return
        raise LedgerError("could not append to the ledger: the database stayed busy")

    async def rows(self, chunk: int = 5000) -> AsyncIterator[LedgerRow]:
        start = 0
        while True:
            query = (
                select(ledger_entries)
                .where(ledger_entries.c.idx >= start)
                .order_by(ledger_entries.c.idx)
                .limit(chunk)
            )
            async with self._engine.connect() as conn:
                batch = (await conn.execute(query)).all()
            if not batch:
                return
            for r in batch:
                yield LedgerRow(index=r.idx, body=bytes(r.body), hash=bytes(r.hash))
            start = batch[-1].idx + 1

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(ledger_entries))).scalar_one())


class SqlPaperStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def accounts(self) -> list[str]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(paper_balances.c.account).distinct())).all()
        return sorted(r.account for r in rows)

    async def load(self, account: str) -> AccountState | None:
        async with self._engine.connect() as conn:
            balances = (
                await conn.execute(select(paper_balances).where(paper_balances.c.account == account))
            ).all()
            if not balances:
                return None
            rows = (
                await conn.execute(select(paper_orders.c.data).where(paper_orders.c.account == account))
            ).all()
        return AccountState(
            {b.asset: (Decimal(b.free), Decimal(b.locked)) for b in balances},
            [msgspec.json.decode(r.data, type=PaperOrder) for r in rows],
        )

    async def max_sequence(self) -> int:
        async with self._engine.connect() as conn:
            top = (await conn.execute(select(func.max(paper_orders.c.venue_order_id)))).scalar()
        return 0 if top is None else int(str(top)[1:])

    async def save(self, balances: Mapping[str, Balances], orders_: Sequence[PaperOrder]) -> None:
        async with self._engine.begin() as conn:
            for account, values in balances.items():
                await conn.execute(delete(paper_balances).where(paper_balances.c.account == account))
                if values:
                    await conn.execute(
                        insert(paper_balances),
                        [
                            {"account": account, "asset": a, "free": str(f), "locked": str(lk)}
                            for a, (f, lk) in values.items()
                        ],
                    )
            if orders_:
                ids = [o.venue_order_id for o in orders_]
                await conn.execute(delete(paper_orders).where(paper_orders.c.venue_order_id.in_(ids)))
                await conn.execute(
                    insert(paper_orders),
                    [
                        {
                            "venue_order_id": o.venue_order_id,
                            "account": o.account,
                            "client_order_id": o.client_order_id,
                            "data": _encode(o).decode(),
                        }
                        for o in orders_
                    ],
                )
