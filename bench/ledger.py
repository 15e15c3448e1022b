"""The ledger's throughput and proof cost (issue 7).

    .venv/bin/python bench/ledger.py [--entries 1000000] [--batch 1000]

Appends ``--entries`` request-sized entries through the real journal (``LedgerWriter`` over
``SqlLedgerStore`` on SQLite in WAL mode, a temporary file), queued as fast as they come so
group commit takes up to ``--batch`` per transaction; every entry's Merkle nodes are written
with it.  Then, at that size: the root, inclusion proofs for random entries, and consistency
proofs from random older sizes, each generated from the stored nodes and verified.
Target: at least 20,000 entries a second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bastion.clock import SystemClock  # noqa: E402
from bastion.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion  # noqa: E402
from bastion.ledger.writer import LedgerWriter  # noqa: E402
from bastion.store.db import Database, migrate, sqlite_url  # noqa: E402
from bastion.store.repos import SqlLedgerStore  # noqa: E402

ENTRY = {
    "request_id": "req_0123456789abcdef0123",
    "route": "place_order",
    "method": "POST",
    "path": "/v1/orders",
    "client_ip": "203.0.113.7",
    "request_digest": "ab" * 32,
    "key_id": "bst_3kV9aaaaaaaaaaaaaaaaaaaaaaaaaa",  # pragma: allowlist secret
    "account": "alice",
    "verdict": "allow",
    "status": 201,
}


async def run(entries: int, batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bastion-ledger-") as tmp:
        url = sqlite_url(Path(tmp) / "ledger.db")
        migrate(url)
        db = Database(url)
        await db.start()
        store = SqlLedgerStore(db)
        writer = LedgerWriter(store, SystemClock(), linger=0)
        await writer.start()
        start, cpu = time.perf_counter(), time.process_time()
        done = 0
        while done < entries:
            count = min(batch, entries - done)
            await asyncio.gather(*(writer.enqueue("request", ENTRY | {"n": done + i}) for i in range(count)))
            done += count
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        await writer.close()
        print(
            f"appended {entries:,} entries in {wall:.1f} s: {entries / wall:,.0f} entries/s "
            f"({used / entries * 1e6:.1f} µs CPU each), {writer.batches:,} commits"
        )
        size, root = await store.current_tree()
        assert size == entries
        rng = random.Random(7)
        timings: dict[str, list[float]] = {
            "root at a random older size": [],
            "inclusion proof": [],
            "consistency proof": [],
        }
        for _ in range(50):
            older = rng.randrange(1, size)
            t = time.perf_counter()
            old_root = await store.root(older)
            timings["root at a random older size"].append(time.perf_counter() - t)
            index = rng.randrange(size)
            t = time.perf_counter()
            proof = await store.inclusion(index, size)
            timings["inclusion proof"].append(time.perf_counter() - t)
            row = await store.entry(index)
            assert row is not None
            verify_inclusion(leaf_hash(row.body), index, size, proof, root)
            t = time.perf_counter()
            consistency = await store.consistency(older, size)
            timings["consistency proof"].append(time.perf_counter() - t)
            verify_consistency(older, size, old_root, root, consistency)
        print(f"| at {size:,} entries | median ms | max ms |")
        print("|---|---|---|")
        for name, values in timings.items():
            print(f"| {name} | {statistics.median(values) * 1000:.2f} | {max(values) * 1000:.2f} |")
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.entries, args.batch))


if __name__ == "__main__":
    main()
