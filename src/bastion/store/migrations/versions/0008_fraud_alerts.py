"""Fraud stage state (sightings, holds), account owners, alert sinks.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    op.create_table(
        "fraud_sightings",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False, index=True),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("first_seen_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "fraud_holds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("score", sa.String(32), nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("decided_us", sa.BigInteger, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.UniqueConstraint("account", "client_order_id", "created_us", name="uq_fraud_hold"),
    )
    op.create_table(
        "alert_sinks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display", sa.String(256), nullable=False),
        sa.Column("sealed_config", sa.LargeBinary, nullable=False),
        sa.Column("allow_private", sa.Integer, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_sinks")
    op.drop_table("fraud_holds")
    op.drop_table("fraud_sightings")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("owner")
