"""Accounts, Bastion keys, orders, the ledger and the paper venue's state.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("account", sa.String(64), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=True),
        sa.Column("revoked_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_api_keys_account", "api_keys", ["account"])
    op.create_table(
        "orders",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account", sa.String(64), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(24), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("venue_order_id", sa.String(64), nullable=True),
        sa.Column("reject_reason", sa.String(64), nullable=True),
        sa.Column("snapshot", sa.Text, nullable=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account", "client_order_id", name="uq_orders_account_client_order_id"),
    )
    op.create_index("ix_orders_account_created", "orders", ["account", "created_us"])
    op.create_index("ix_orders_account_symbol", "orders", ["account", "symbol"])
    op.create_table(
        "ledger_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "paper_balances",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("asset", sa.String(16), primary_key=True),
        sa.Column("free", sa.String(48), nullable=False),
        sa.Column("locked", sa.String(48), nullable=False),
    )
    op.create_table(
        "paper_orders",
        sa.Column("venue_order_id", sa.String(32), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.UniqueConstraint("account", "client_order_id", name="uq_paper_orders_account_client_order_id"),
    )
    op.create_index("ix_paper_orders_account", "paper_orders", ["account"])


def downgrade() -> None:
    for table in ("paper_orders", "paper_balances", "ledger_entries", "orders", "api_keys", "accounts"):
        op.drop_table(table)
