"""Venue credentials, sealed by the vault, with the venue's permission report.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "venue_credentials",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account", sa.String(64), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("permissions", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_venue_credentials_account", "venue_credentials", ["account"])


def downgrade() -> None:
    op.drop_table("venue_credentials")
