"""Repositories for the fraud stage (sightings, holds, owners) and the alert sinks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.clock import from_us, to_us
from bastion.ports import HoldRecord, HoldStatus, Ledger, RowConflict
from bastion.store.db import Database
from bastion.store.tables import accounts, alert_sinks, fraud_holds, fraud_sightings

_INSERT_SIGHTING_OR_SKIP = {
    "sqlite": sqlite_insert(fraud_sightings).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(fraud_sightings).on_conflict_do_nothing(),
}


def _hold(m: Mapping[Any, Any]) -> HoldRecord:
    decided = m["decided_us"]
    return HoldRecord(
        id=str(m["id"]),
        account=str(m["account"]),
        key_id=str(m["key_id"]),
        client_order_id=str(m["client_order_id"]),
        fingerprint=str(m["fingerprint"]),
        score=float(str(m["score"])),
        rules=tuple(msgspec.json.decode(str(m["rules"]), type=list[str])),
        reason=str(m["reason"]),
        created_at=from_us(int(str(m["created_us"]))),
        status=HoldStatus(str(m["status"])),
        decided_at=None if decided is None else from_us(int(str(decided))),
        decided_by=None if m["decided_by"] is None else str(m["decided_by"]),
    )


class SqlFraudStore:
    """``ports.FraudStore`` on the database; hold changes commit with their ledger entries."""

    def __init__(self, db: Database, journal: Ledger) -> None:
        self._db = db
        self._journal = journal

    async def sightings(
        self, *, key_id: str | None = None, account: str | None = None
    ) -> list[tuple[str, str]]:
        query = select(fraud_sightings.c.address, fraud_sightings.c.network)
        if key_id is not None:
            query = query.where(fraud_sightings.c.key_id == key_id)
        if account is not None:
            query = query.where(fraud_sightings.c.account == account)
        return await self._db.read(lambda conn: [(r.address, r.network) for r in conn.execute(query)])

    async def add_sightings(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        if not rows:
            return
        values = [
            {"key_id": k, "account": a, "address": ip, "network": n, "first_seen_us": to_us(at)}
            for k, a, ip, n, at in rows
        ]

        def run(conn: Connection) -> None:
            conn.execute(_INSERT_SIGHTING_OR_SKIP[conn.dialect.name], values)

        await self._db.write(run)

    async def copy_sightings(self, old_key: str, new_key: str, now: datetime) -> int:
        """A rotated key inherits where its predecessor was used."""
        found = await self._db.read(
            lambda conn: conn.execute(
                select(fraud_sightings).where(fraud_sightings.c.key_id == old_key)
            ).all()
        )
        await self.add_sightings([(new_key, r.account, r.address, r.network, now) for r in found])
        return len(found)

    async def forget(self, account: str) -> None:
        """Erasure: where the account's keys were used goes with its other personal data."""

        def run(conn: Connection) -> None:
            conn.execute(delete(fraud_sightings).where(fraud_sightings.c.account == account))

        await self._db.write(run)

    async def owner(self, account: str) -> str | None:
        query = select(accounts.c.name, accounts.c.owner).where(accounts.c.name == account)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return str(row.owner or row.name)

    async def owners(self) -> dict[str, str]:
        query = select(accounts.c.name, accounts.c.owner)
        return await self._db.read(lambda conn: {r.name: str(r.owner or r.name) for r in conn.execute(query)})

    async def set_owner(self, account: str, owner: str) -> bool:
        def run(conn: Connection) -> bool:
            return bool(
                conn.execute(update(accounts).where(accounts.c.name == account).values(owner=owner)).rowcount
            )

        return await self._db.write(run)

    async def create_hold(
        self, hold: HoldRecord, entry: tuple[str, Mapping[str, object]] | None = None
    ) -> None:
        values = {
            "id": hold.id,
            "account": hold.account,
            "key_id": hold.key_id,
            "client_order_id": hold.client_order_id,
            "fingerprint": hold.fingerprint,
            "score": repr(round(hold.score, 4)),
            "rules": msgspec.json.encode(list(hold.rules)).decode(),
            "reason": hold.reason,
            "status": hold.status.value,
            "created_us": to_us(hold.created_at),
            "decided_us": None,
            "decided_by": None,
        }

        def write(conn: Connection) -> None:
            conn.execute(insert(fraud_holds).values(**values))

        if entry is None:
            await self._db.write(write)
        else:
            await self._journal.append(entry[0], entry[1], write=write)

    async def hold(self, hold_id: str) -> HoldRecord | None:
        query = select(fraud_holds).where(fraud_holds.c.id == hold_id)
        row = await self._db.read(lambda conn: conn.execute(query).mappings().first())
        return None if row is None else _hold(row)

    async def holds(self, *, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]:
        query = select(fraud_holds).order_by(fraud_holds.c.created_us.desc()).limit(limit)
        if status is not None:
            query = query.where(fraud_holds.c.status == status.value)
        return await self._db.read(lambda conn: [_hold(r) for r in conn.execute(query).mappings()])

    async def decide(
        self, hold_id: str, status: HoldStatus, *, actor: str, now: datetime, entry: Mapping[str, object]
    ) -> None:
        """Confirm or reject a pending hold, with its ledger entry; RowConflict if it is not pending."""
        statement = (
            update(fraud_holds)
            .where(fraud_holds.c.id == hold_id, fraud_holds.c.status == HoldStatus.PENDING.value)
            .values(status=status.value, decided_us=to_us(now), decided_by=actor)
        )

        def write(conn: Connection) -> None:
            if not conn.execute(statement).rowcount:
                raise RowConflict(hold_id)

        await self._journal.append(f"fraud.hold_{status.value}", dict(entry), write=write)


@dataclass(frozen=True, slots=True)
class SinkRow:
    id: str
    kind: str
    display: str
    sealed_config: bytes
    allow_private: bool
    created_at: datetime


class SqlAlertSinks:
    def __init__(self, db: Database, journal: Ledger) -> None:
        self._db = db
        self._journal = journal

    async def all(self) -> list[SinkRow]:
        query = select(alert_sinks).order_by(alert_sinks.c.created_us)
        return await self._db.read(
            lambda conn: [
                SinkRow(
                    r.id,
                    r.kind,
                    r.display,
                    bytes(r.sealed_config),
                    bool(r.allow_private),
                    from_us(r.created_us),
                )
                for r in conn.execute(query)
            ]
        )

    async def add(self, row: SinkRow, entry: Mapping[str, object]) -> None:
        values = {
            "id": row.id,
            "kind": row.kind,
            "display": row.display,
            "sealed_config": row.sealed_config,
            "allow_private": 1 if row.allow_private else 0,
            "created_us": to_us(row.created_at),
        }

        def write(conn: Connection) -> None:
            conn.execute(insert(alert_sinks).values(**values))

        await self._journal.append("alerts.sink_added", dict(entry), write=write)

    async def remove(self, sink_id: str, entry: Mapping[str, object]) -> bool:
        def write(conn: Connection) -> None:
            if not conn.execute(delete(alert_sinks).where(alert_sinks.c.id == sink_id)).rowcount:
                raise RowConflict(sink_id)

        try:
            await self._journal.append("alerts.sink_removed", dict(entry), write=write)
        except RowConflict:
            return False
        return True
