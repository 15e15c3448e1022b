"""The single ledger writer (the journal): appends are queued and committed in batches.

``append`` returns only after the batch holding the entry is committed, so a caller that
acknowledges after ``append`` acknowledges only what is durable.

Group commit: while the writer is busy (its previous commit ended less than ``busy_window``
ago), it lingers ``linger`` seconds before taking a batch, so concurrent requests share one
commit; an idle writer commits at once, so a lone request waits for nothing.  Commits are
the largest cost per order (docs/benchmarks.md); ``linger=0`` turns this off.  An entry may carry a row
write that commits in the same transaction (an order's state with the entry that records
it), so nothing is ever half-recorded.  A row write that finds its unique key taken writes
nothing and raises ``RowConflict``: its entry is skipped and only its caller gets the error.  If a whole batch
fails, every caller in it gets the exception and the writer stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

from bastion.clock import to_us
from bastion.errors import LedgerError
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import leaf_hash
from bastion.ports import Clock, LedgerRow, PendingEntry, RowWrite


class LedgerStore(Protocol):
    async def append_batch(self, entries: Sequence[PendingEntry]) -> None:
        """In one transaction: run each entry's row write (one that raises ``RowConflict``
        sets the entry's ``error`` and skips it), then chain and write the remaining entries
        after the stored head, setting each one's ``index`` and ``leaf``."""
        ...

    def tree_head(self) -> tuple[int, bytes] | None:
        """(tree size, root) as of this process's last commit; None before any."""
        ...

    async def current_tree(self) -> tuple[int, bytes]: ...

    async def entry(self, index: int) -> LedgerRow | None: ...

    async def save_head(self, head: SignedTreeHead) -> None: ...


class HeadSigner(Protocol):
    def sign(self, tree_size: int, root_hash: bytes, timestamp_us: int) -> SignedTreeHead: ...


_MAX_BATCH = 2000
_RECENT_LEAVES = 50_000


class LedgerWriter:
    def __init__(
        self,
        store: LedgerStore,
        clock: Clock,
        *,
        linger: float = 0.0005,
        busy_window: float = 0.005,
        publish_seconds: float = 2.0,
    ) -> None:
        if not 0 <= linger <= 0.01 or busy_window < 0:
            raise ValueError("linger must be 0..10 ms and busy_window non-negative")
        if publish_seconds <= 0:
            raise ValueError("publish_seconds must be positive")
        self.signer: HeadSigner | None = None  # set once the vault is open (Services.start)
        self.latest_head: SignedTreeHead | None = None
        self._published = 0
        self._publish_seconds = publish_seconds
        self._publisher: asyncio.Task[None] | None = None
        self._recent: dict[int, bytes] = {}
        self._store = store
        self._clock = clock
        self._linger = linger
        self._busy_window = busy_window
        self._last_commit = float("-inf")
        self.batches = 0
        self.entries = 0
        self._queue: asyncio.Queue[tuple[PendingEntry, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="ledger-heads")

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(LedgerError):
            await self.publish()  # a stopped writer leaves a signed head over all it wrote

    # -- signed tree heads and receipts -----------------------------------------------------------
    async def signed_head(self, covering: int = 0) -> SignedTreeHead | None:
        """A signed head over at least ``covering`` entries: the latest one, signed anew only
        when the tree has grown since (at most one signature per batch, and only when asked)."""
        if self.signer is None:
            return None
        mine = self._store.tree_head()
        if mine is None or mine[0] < covering:
            mine = await self._store.current_tree()
        size, root = mine
        latest = self.latest_head
        if latest is None or latest.tree_size != size:
            self.latest_head = latest = self.signer.sign(size, root, to_us(self._clock.now()))
        return latest

    async def publish(self) -> SignedTreeHead | None:
        """Sign and store a head over everything written so far (if it grew since the last)."""
        head = await self.signed_head()
        if head is not None and head.tree_size > self._published:
            await self._store.save_head(head)
            self._published = head.tree_size
        return head

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(self._publish_seconds)
            try:
                await self.publish()
            except Exception:  # publishing retries next time; appends are unaffected
                logging.getLogger("bastion.ledger").exception("publishing the tree head failed")

    async def receipt(self, index: int) -> dict[str, object] | None:
        if self.signer is None:
            return None
        leaf = self._recent.get(index)
        if leaf is None:
            row = await self._store.entry(index)
            if row is None:
                raise LedgerError(f"no ledger entry {index}")
            leaf = leaf_hash(row.body)
        head = await self.signed_head(covering=index + 1)
        if head is None:
            return None
        return {"index": index, "leaf_hash": leaf.hex(), "tree_head": head.to_json()}

    async def append(self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None) -> int:
        return await self._put(kind, data, write)

    def enqueue(
        self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None
    ) -> Awaitable[int]:
        return self._put(kind, data, write)

    def _put(self, kind: str, data: Mapping[str, object], write: RowWrite | None) -> asyncio.Future[int]:
        if self._task is None:
            raise LedgerError("ledger writer is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = PendingEntry(kind=kind, data=data, time_us=to_us(self._clock.now()), write=write)
        self._queue.put_nowait((entry, future))
        return future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            loop = asyncio.get_running_loop()
            if self._linger and loop.time() - self._last_commit < self._busy_window:
                await asyncio.sleep(self._linger)
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            entries = [entry for entry, _ in batch]
            try:
                await self._store.append_batch(entries)
            except Exception as exc:  # every waiter learns of the failure; the writer lives on
                error = exc if isinstance(exc, LedgerError) else LedgerError(f"ledger write failed: {exc!r}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                recent = self._recent
                for entry, _ in batch:
                    if entry.index >= 0 and entry.leaf:
                        recent[entry.index] = entry.leaf
                while len(recent) > _RECENT_LEAVES:
                    del recent[next(iter(recent))]
                for entry, future in batch:
                    if future.done():
                        continue
                    if entry.error is not None:
                        future.set_exception(entry.error)
                    else:
                        future.set_result(entry.index)
            finally:
                self._last_commit = loop.time()
                self.batches += 1
                self.entries += len(batch)
                for _ in batch:
                    self._queue.task_done()
