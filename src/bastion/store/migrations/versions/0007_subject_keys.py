"""Per-subject data keys for personal data in ledger entries (crypto-shredding).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("subject", sa.String(96), primary_key=True),
        sa.Column("sealed_key", sa.LargeBinary, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("erased_us", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("subject_keys")
