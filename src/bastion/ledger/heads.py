"""Signed tree heads and receipts (after RFC 9162 §4.10, TreeHeadDataV2).

A head commits to the ledger's first ``tree_size`` entries.  Bastion signs, with its Ed25519
ledger key, the bytes::

    b"bastion-tree-head-v1\\x00" || uint64(tree_size) || uint64(timestamp_us) || root_hash[32]

(big-endian integers).  The head's JSON is ``{"tree_size", "root_hash" (hex), "timestamp"
(microseconds since the epoch), "signature" (base64), "key_version"}``.

A **receipt** for an entry is its index, its leaf hash (``SHA-256(0x00 || entry)``) and a
signed head that includes it (``tree_size > index``); an inclusion proof for that index and
size (``GET /v1/ledger/entries/{index}/proof?tree_size=…``) links the leaf to the signed root.
Verifying needs only the ledger's public key (``bastion ledger public-key``).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.ledger.merkle import ProofError, verify_inclusion

_CONTEXT = b"bastion-tree-head-v1\x00"


def head_message(tree_size: int, timestamp_us: int, root_hash: bytes) -> bytes:
    if len(root_hash) != 32 or tree_size < 0 or timestamp_us < 0:
        raise ValueError("a tree head needs a 32-byte root and non-negative size and time")
    return _CONTEXT + struct.pack(">QQ", tree_size, timestamp_us) + root_hash


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_us: int
    signature: bytes
    key_version: int = 1

    def to_json(self) -> dict[str, object]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp_us,
            "signature": base64.b64encode(self.signature).decode(),
            "key_version": self.key_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SignedTreeHead:
        try:
            return cls(
                int(str(data["tree_size"])),
                bytes.fromhex(str(data["root_hash"])),
                int(str(data["timestamp"])),
                base64.b64decode(str(data["signature"]), validate=True),
                int(str(data.get("key_version", 1))),
            )
        except (KeyError, ValueError) as exc:
            raise ProofError(f"not a signed tree head: {exc}") from None

    def verify(self, public_key: Ed25519PublicKey) -> None:
        try:
            public_key.verify(self.signature, head_message(self.tree_size, self.timestamp_us, self.root_hash))
        except (InvalidSignature, ValueError):
            raise ProofError("the tree head's signature does not verify") from None


def sign_head(
    key: Ed25519PrivateKey, tree_size: int, root_hash: bytes, timestamp_us: int, version: int
) -> SignedTreeHead:
    signature = key.sign(head_message(tree_size, timestamp_us, root_hash))
    return SignedTreeHead(tree_size, root_hash, timestamp_us, signature, version)


def verify_receipt(
    receipt: dict[str, object], proof: list[bytes], public_key: Ed25519PublicKey, entry: bytes | None = None
) -> SignedTreeHead:
    """Check a receipt: the head's signature, the inclusion proof, and (given the entry's
    bytes) that the leaf hash is the entry's.  Returns the head; raises ProofError."""
    from bastion.ledger.merkle import leaf_hash

    head_data = receipt.get("tree_head")
    if not isinstance(head_data, dict):
        raise ProofError("a receipt carries a tree_head")
    head = SignedTreeHead.from_json(head_data)
    head.verify(public_key)
    try:
        index = int(str(receipt["index"]))
        leaf = bytes.fromhex(str(receipt["leaf_hash"]))
    except (KeyError, ValueError):
        raise ProofError("a receipt carries index and leaf_hash") from None
    if entry is not None and leaf_hash(entry) != leaf:
        raise ProofError("the receipt's leaf hash is not this entry's")
    verify_inclusion(leaf, index, head.tree_size, proof, head.root_hash)
    return head
