"""The schema.  Times are epoch microseconds (exact and portable); decimals are strings."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    # Who owns the account (several accounts may share one): self-match prevention refuses
    # orders that would trade between them.  NULL: the account is its own owner.
    Column("owner", String(64), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("account", String(64), ForeignKey("accounts.name"), nullable=False),
    Column("alg", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("label", String(128), nullable=False, server_default=""),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
    Column("secret_sealed", LargeBinary, nullable=True),
    Column("allowed_cidrs", Text, nullable=False, server_default=""),  # comma-separated, empty: any
    Column("last_used_us", BigInteger, nullable=True),
    Column("last_used_ip", String(64), nullable=True),
    Column("rotated_to", String(40), nullable=True),
    Index("ix_api_keys_account", "account"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), ForeignKey("accounts.name"), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("symbol", String(24), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("request", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("status", String(20), nullable=False),
    Column("venue_order_id", String(64), nullable=True),
    Column("reject_reason", String(64), nullable=True),
    Column("snapshot", Text, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    UniqueConstraint("account", "client_order_id", name="uq_orders_account_client_order_id"),
    Index("ix_orders_account_created", "account", "created_us"),
    Index("ix_orders_account_symbol", "account", "symbol"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("body", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
)

venue_credentials = Table(
    "venue_credentials",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), ForeignKey("accounts.name"), nullable=False),
    Column("venue", String(32), nullable=False),
    Column("sealed", LargeBinary, nullable=False),  # the whole credential, sealed by the vault
    Column("fingerprint", String(16), nullable=False),  # SHA-256 prefix of the API key, to tell them apart
    Column("permissions", Text, nullable=False),  # the venue's report, as JSON
    Column("created_us", BigInteger, nullable=False),
    Index("ix_venue_credentials_account", "account"),
)

paper_balances = Table(
    "paper_balances",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("asset", String(16), primary_key=True),
    Column("free", String(48), nullable=False),
    Column("locked", String(48), nullable=False),
)

paper_orders = Table(
    "paper_orders",
    metadata,
    Column("venue_order_id", String(32), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("account", "client_order_id", name="uq_paper_orders_account_client_order_id"),
    Index("ix_paper_orders_account", "account"),
)

# Versioned policy documents: one row per version; the highest version of a subject is in force.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("subject", String(80), primary_key=True),  # "account:NAME" or "key:KEY_ID"
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("document", Text, nullable=False),  # JSON, the whole document after the change
    Column("created_us", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
)

# The kill switch: states other than active, at global (subject ""), account or key level.
trading_states = Table(
    "trading_states",
    metadata,
    Column("level", String(16), primary_key=True),
    Column("subject", String(80), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
)

# The ledger's Merkle tree (RFC 9162): the hash of every perfect subtree, leaves at level 0.
ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("level", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)

# Signed tree heads, as published.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("timestamp_us", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("key_version", BigInteger, nullable=False),
)

# The ledger's Ed25519 signing keys: the private key sealed by the vault.
ledger_keys = Table(
    "ledger_keys",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sealed_private", LargeBinary, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

# Per-subject data keys for personal data in ledger entries (crypto-shredding): the key is
# sealed by the vault; erasing a subject destroys it, and what it sealed no longer opens.
subject_keys = Table(
    "subject_keys",
    metadata,
    Column("subject", String(96), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=True),  # NULL once erased
    Column("created_us", BigInteger, nullable=False),
    Column("erased_us", BigInteger, nullable=True),
)

# Where each key (and so its account) has been used from: the fraud stage's new-network rule.
# Deleted with the account's other personal data when it is erased.
fraud_sightings = Table(
    "fraud_sightings",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("address", String(64), primary_key=True),
    Column("account", String(64), nullable=False, index=True),
    Column("network", String(64), nullable=False),
    Column("first_seen_us", BigInteger, nullable=False),
)

# Orders the fraud stage held until an operator confirms or rejects them.
fraud_holds = Table(
    "fraud_holds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("score", String(32), nullable=False),
    Column("rules", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("decided_us", BigInteger, nullable=True),
    Column("decided_by", String(128), nullable=True),
    UniqueConstraint("account", "client_order_id", "created_us", name="uq_fraud_hold"),
)

# Alert sinks: the target (a URL may carry a token) and the webhook secret, sealed by the vault.
alert_sinks = Table(
    "alert_sinks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("display", String(256), nullable=False),
    Column("sealed_config", LargeBinary, nullable=False),
    Column("allow_private", Integer, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)
