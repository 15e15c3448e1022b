"""What the HTTP routes and the CLI ask of the ledger: the signed head, inclusion and
consistency proofs (RFC 9162), over the stored tree."""

from __future__ import annotations

from bastion.errors import LedgerError
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import leaf_hash
from bastion.ledger.writer import LedgerWriter
from bastion.ports import LedgerRow
from bastion.store.repos import SqlLedgerStore


class LedgerProofs:
    def __init__(self, writer: LedgerWriter, store: SqlLedgerStore) -> None:
        self._writer = writer
        self._store = store

    async def head(self) -> SignedTreeHead | None:
        """The latest signed head, signed and published now if the tree grew since."""
        return await self._writer.publish()

    async def proof(self, index: int, tree_size: int) -> tuple[LedgerRow, bytes, list[bytes]] | None:
        """(entry, its leaf hash, inclusion proof in the tree of ``tree_size``), or None when
        the entry or that tree does not exist (yet)."""
        size, _ = await self._store.current_tree()
        if not 0 <= index < tree_size <= size:
            return None
        row = await self._store.entry(index)
        if row is None:
            raise LedgerError(f"ledger entry {index} is missing from a tree of {size}")
        return row, leaf_hash(row.body), await self._store.inclusion(index, tree_size)

    async def consistency(self, first: int, second: int) -> list[bytes] | None:
        size, _ = await self._store.current_tree()
        if not 0 < first <= second <= size:
            return None
        return await self._store.consistency(first, second)
