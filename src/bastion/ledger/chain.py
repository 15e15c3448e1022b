"""Hash-chained ledger entries (first form; the RFC 9162 Merkle tree builds on these bytes).

An entry's body is canonical JSON (sorted keys, no spaces)::

    {"data": {...}, "index": N, "kind": "...", "prev": "<hex hash of entry N-1>", "time_us": T}

and its hash is ``SHA-256(body)``.  Entry 0 has ``prev`` = 64 zeros.  Editing a body breaks
its hash; editing a hash breaks the next entry's ``prev``; deleting or reordering rows breaks
the index sequence.  :func:`verify` names the first entry that fails.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import msgspec

from bastion.errors import LedgerCorrupt
from bastion.ports import LedgerRow

GENESIS = bytes(32)
_encoder = msgspec.json.Encoder(order="sorted")


def make_entry(index: int, prev: bytes, kind: str, time_us: int, data: Mapping[str, object]) -> LedgerRow:
    body = _encoder.encode(
        {"data": data, "index": index, "kind": kind, "prev": prev.hex(), "time_us": time_us}
    )
    return LedgerRow(index=index, body=body, hash=hashlib.sha256(body).digest())


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    data: dict[str, object]
    index: int
    kind: str
    prev: str
    time_us: int


def decode_body(body: bytes) -> _Body:
    return msgspec.json.decode(body, type=_Body)


def verify(rows: Iterable[LedgerRow]) -> tuple[int, bytes]:
    """Check every row in order; return (entry count, last hash) or raise :class:`LedgerCorrupt`."""
    prev = GENESIS
    expected = 0
    for row in rows:
        if row.index != expected:
            raise LedgerCorrupt(expected, f"missing or out of order (found index {row.index})")
        if hashlib.sha256(row.body).digest() != row.hash:
            raise LedgerCorrupt(row.index, "stored hash does not match the entry's content")
        try:
            body = decode_body(row.body)
        except msgspec.DecodeError:
            raise LedgerCorrupt(row.index, "entry content is not a valid ledger entry") from None
        if body.index != row.index:
            raise LedgerCorrupt(row.index, f"entry claims index {body.index}")
        if body.prev != prev.hex():
            raise LedgerCorrupt(row.index, "chain broken: previous hash does not match")
        prev = row.hash
        expected += 1
    return expected, prev
