"""The fraud stage's memory of keys: sightings and owners cached from the store, learned
sightings written behind (never on the request path), and the index of held orders."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog

from bastion.fraud.networks import Sightings, sightings_from
from bastion.ports import FraudStore, HoldRecord

FLUSH_SECONDS = 0.5
log = structlog.get_logger("bastion.fraud")


class FraudMemory:
    def __init__(self, store: FraudStore) -> None:
        self._store = store
        self._keys: dict[str, Sightings] = {}
        self._accounts: dict[str, Sightings] = {}
        self._owners: dict[str, str] = {}
        self._queue: list[tuple[str, str, str, str, datetime]] = []
        self._holds: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, flush_loop: bool = True) -> None:
        """Load the holds (their orders' retries are checked against them; a rejected one keeps
        refusing its order)."""
        for hold in reversed(await self._store.holds(limit=10_000)):  # oldest first: the newest wins
            self._holds[(hold.account, hold.client_order_id)] = hold.id
        if flush_loop:
            await self.start_flushing()

    async def start_flushing(self) -> None:
        """Write learned sightings behind, every FLUSH_SECONDS (a serving process)."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="fraud-sightings")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def sightings(self, key_id: str, account: str) -> tuple[Sightings, Sightings]:
        key = self._keys.get(key_id)
        if key is None:
            loaded = sightings_from(await self._store.sightings(key_id=key_id))
            # a concurrent request may have loaded it (and learned into it) meanwhile: keep that
            key = self._keys.setdefault(key_id, loaded)
        known = self._accounts.get(account)
        if known is None:
            loaded = sightings_from(await self._store.sightings(account=account))
            known = self._accounts.setdefault(account, loaded)
        return key, known

    async def owner(self, account: str) -> str:
        found = self._owners.get(account)
        if found is None:
            found = await self._store.owner(account) or account
            self._owners[account] = found
        return found

    def set_owner(self, account: str, owner: str) -> None:
        self._owners[account] = owner

    def learn(self, key_id: str, account: str, address: str, network: str, at: datetime) -> None:
        """Remember a sighting now (in memory) and store it soon."""
        key = self._keys.setdefault(key_id, Sightings())
        if address in key.addresses:
            return
        key.add(address, network)
        self._accounts.setdefault(account, Sightings()).add(address, network)
        self._queue.append((key_id, account, address, network, at))

    def forget_account(self, account: str) -> None:
        self._accounts.pop(account, None)
        self._keys.clear()  # every key's sightings reload from the store on next use

    async def flush(self) -> None:
        rows, self._queue = self._queue, []
        if not rows:
            return
        try:
            await self._store.add_sightings(rows)
        except Exception:  # kept in memory; tried again next time
            log.exception("sightings_write_failed", rows=len(rows))
            self._queue = rows + self._queue

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    # -- holds --------------------------------------------------------------------------------
    def hold_for(self, account: str, client_order_id: str) -> str | None:
        return self._holds.get((account, client_order_id))

    async def create_hold(self, hold: HoldRecord) -> None:
        await self._store.create_hold(hold)
        self._holds[(hold.account, hold.client_order_id)] = hold.id

    async def refresh_hold(self, hold_id: str) -> HoldRecord | None:
        return await self._store.hold(hold_id)

    def drop_hold(self, account: str, client_order_id: str) -> None:
        self._holds.pop((account, client_order_id), None)
