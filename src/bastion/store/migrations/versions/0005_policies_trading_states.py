"""Versioned policy documents and trading states (the kill switch).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
    )
    op.create_table(
        "trading_states",
        sa.Column("level", sa.String(16), primary_key=True),
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trading_states")
    op.drop_table("policy_versions")
