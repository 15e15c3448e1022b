"""Key lifecycle: IP allow-lists, last use, rotation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("allowed_cidrs", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("last_used_us", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("last_used_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("rotated_to", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for column in ("rotated_to", "last_used_ip", "last_used_us", "allowed_cidrs"):
            batch.drop_column(column)
