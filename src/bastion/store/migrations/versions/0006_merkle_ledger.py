"""The ledger's Merkle tree nodes, signed tree heads and signing keys (RFC 9162).

Existing entries become leaves: their nodes are built here from the stored bodies.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_heads",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary, nullable=False),
        sa.Column("timestamp_us", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("key_version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ledger_keys",
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sealed_private", sa.LargeBinary, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    from bastion.ledger.merkle import CompactRange, leaf_hash

    conn = op.get_bind()
    tree = CompactRange()
    nodes = []
    for (body,) in conn.execute(sa.text("SELECT body FROM ledger_entries ORDER BY idx")):
        data = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else str(body).encode()
        nodes += [{"level": lv, "idx": ix, "hash": hv} for lv, ix, hv in tree.append(leaf_hash(data))]
    if nodes:
        conn.execute(
            sa.text("INSERT INTO ledger_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"), nodes
        )


def downgrade() -> None:
    op.drop_table("ledger_keys")
    op.drop_table("ledger_heads")
    op.drop_table("ledger_nodes")
