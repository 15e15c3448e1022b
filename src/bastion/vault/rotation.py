"""Master-key rotation: re-seal every sealed secret under the newest master key.

Each secret is opened with whatever version sealed it and sealed again under the current
one; the new value replaces the old one only if the row still holds the old one (compare
and set), in the same transaction as a ``vault.resealed`` ledger entry.  A crash at any
point leaves every row either old or new, both of which open while both master keys exist;
``resume`` finishes the job under the same new version.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.ports import Ledger, RowConflict, RowWrite
from bastion.vault.envelope import SealContext, master_version, open_secret, seal_secret
from bastion.vault.master import MasterKeyRing


@dataclass(frozen=True, slots=True)
class SealedRow:
    table: str
    row_id: str
    context: SealContext
    sealed: bytes


class SealedRows(Protocol):
    async def sealed_rows(self) -> Sequence[SealedRow]: ...

    def replace_write(self, row: SealedRow, new: bytes) -> RowWrite:
        """A row write (for the journal) that swaps ``row.sealed`` for ``new`` only if the
        row still holds ``row.sealed``; raises RowConflict otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class RotationReport:
    target_version: int
    resealed: int
    already_current: int
    skipped: int
    versions_in_use: list[int]


async def reseal_all(ring: MasterKeyRing, rows: SealedRows, ledger: Ledger) -> RotationReport:
    target = ring.current.version
    resealed = already = skipped = 0
    for row in await rows.sealed_rows():
        if master_version(row.sealed) == target:
            already += 1
            continue
        plaintext = open_secret(ring, row.sealed, row.context)
        new = seal_secret(ring, plaintext, row.context)
        del plaintext
        try:
            await ledger.append(
                "vault.resealed",
                {
                    "table": row.table,
                    "id": row.row_id,
                    "from_version": master_version(row.sealed),
                    "to_version": target,
                    "process": os.getpid(),
                },
                write=rows.replace_write(row, new),
            )
        except RowConflict:
            skipped += 1  # the row changed meanwhile (revoked, rotated): leave it
            continue
        resealed += 1
    in_use = sorted({master_version(r.sealed) for r in await rows.sealed_rows()})
    return RotationReport(target, resealed, already, skipped, in_use)
