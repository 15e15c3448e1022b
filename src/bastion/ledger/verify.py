"""Verifying a ledger from its first entry to its signed heads, online (the database) or
offline (an export and the ledger's public key, nothing else).

One pass over the entries checks the hash chain (``chain.verify``) and builds the RFC 9162
tree; at each signed head's size the tree's root must equal the head's root and the head's
signature must verify.  So, beyond what the chain alone catches (an edited, deleted or
reordered entry):

- a **truncated** ledger (entries cut from the end) leaves a signed head larger than what is
  left;
- a **rewritten** history (entries changed and the chain recomputed after them: a fork)
  no longer has the root a head signed;
- a forged head does not verify with the ledger's key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.errors import LedgerCorrupt
from bastion.ledger import chain
from bastion.ledger.heads import SignedTreeHead
from bastion.ledger.merkle import CompactRange, ProofError, leaf_hash
from bastion.ports import LedgerRow

EXPORT_FORMAT = "bastion-ledger-export-v1"


@dataclass(frozen=True, slots=True)
class Verified:
    entries: int
    chain_head: bytes
    root: bytes
    heads: int  # signed heads checked
    signed_size: int  # the largest signed head's size
    unsigned_tail: int  # entries after it (not yet covered by a signed head)


def verify_ledger(
    rows: Iterable[LedgerRow], heads: Iterable[SignedTreeHead], keys: Mapping[int, Ed25519PublicKey]
) -> Verified:
    """Raises :class:`LedgerCorrupt` naming the first entry (or head size) that fails."""
    pending = sorted(heads, key=lambda h: h.tree_size)
    signed = pending[-1].tree_size if pending else 0
    tree = CompactRange()
    checked = 0

    def check_heads_at(size: int) -> None:
        nonlocal checked
        while pending and pending[0].tree_size == size:
            head = pending.pop(0)
            key = keys.get(head.key_version)
            if key is None:
                raise LedgerCorrupt(size, f"signed head of size {size} names unknown key {head.key_version}")
            try:
                head.verify(key)
            except ProofError:
                raise LedgerCorrupt(size, f"signed head of size {size}: signature does not verify") from None
            if head.root_hash != tree.root():
                raise LedgerCorrupt(
                    size - 1,
                    f"fork: entries 0..{size - 1} do not have the root the head of size {size} signed",
                )
            checked += 1

    def through(source: Iterable[LedgerRow]) -> Iterator[LedgerRow]:
        for row in source:
            yield row
            tree.append(leaf_hash(row.body))
            check_heads_at(tree.size)

    check_heads_at(0)
    count, last = chain.verify(through(rows))
    if pending:
        raise LedgerCorrupt(
            count, f"truncated: a signed head covers {pending[-1].tree_size} entries, only {count} are left"
        )
    return Verified(count, last, tree.root(), checked, signed, count - signed)


def write_export(path: Path, rows: Iterable[LedgerRow], heads: Iterable[SignedTreeHead]) -> int:
    """JSON lines: a header, every entry (index, body in base64), then every signed head."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"format": EXPORT_FORMAT}) + "\n")
        for row in rows:
            out.write(json.dumps({"index": row.index, "body": base64.b64encode(row.body).decode()}) + "\n")
            count += 1
        for head in heads:
            out.write(json.dumps({"head": head.to_json()}) + "\n")
    return count


def read_export(path: Path) -> tuple[list[LedgerRow], list[SignedTreeHead]]:
    rows: list[LedgerRow] = []
    heads: list[SignedTreeHead] = []
    with path.open(encoding="utf-8") as source:
        first = json.loads(source.readline() or "{}")
        if first.get("format") != EXPORT_FORMAT:
            raise LedgerCorrupt(0, "not a Bastion ledger export")
        for number, line in enumerate(source, start=2):
            try:
                item = json.loads(line)
                if "head" in item:
                    heads.append(SignedTreeHead.from_json(item["head"]))
                    continue
                body = base64.b64decode(item["body"], validate=True)
                index = int(item["index"])
            except (ValueError, KeyError, TypeError, ProofError):
                raise LedgerCorrupt(len(rows), f"export line {number} is malformed") from None
            rows.append(LedgerRow(index, body, hashlib.sha256(body).digest()))
    return rows, heads
