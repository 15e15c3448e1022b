"""The protocols pipeline stages and services depend on.

Stages never touch SQL, sockets or ASGI: they call these ports.  Every port ships with an
in-memory implementation (``state/memory.py``, ``venues/paper``, ``store/memory.py``) so a
stage can be tested alone, and a SQL or network implementation for real use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from bastion.domain.credentials import CredentialPermissions
from bastion.domain.instruments import Instrument
from bastion.domain.orders import Balance, OrderRequest, Ticker, VenueOrder
from bastion.domain.principals import Scope


class Clock(Protocol):
    """Where time comes from.  Logic never reads the system clock itself."""

    def now(self) -> datetime: ...


class NonceStore(Protocol):
    async def claim(self, scope: str, nonce: str, *, now: float, expires_at: float) -> bool:
        """Record ``nonce`` under ``scope`` until ``expires_at`` (epoch seconds).
        True the first time, False when it is already recorded and not yet expired at ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    account: str
    alg: str
    public_key: bytes
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    label: str = ""
    # HMAC keys only: the shared secret, sealed by the vault (never stored in plain form).
    secret_sealed: bytes | None = None
    # Source networks allowed to use the key (CIDR strings); empty: any address.
    allowed_cidrs: tuple[str, ...] = ()
    last_used_at: datetime | None = None
    last_used_ip: str | None = None
    rotated_to: str | None = None


class KeyUsage(Protocol):
    def touch(self, key_id: str, ip: str, when: datetime) -> None:
        """Note that ``key_id`` was used from ``ip``; recorded lazily, never on the request path."""
        ...


class KeyStore(Protocol):
    async def get_key(self, key_id: str) -> KeyRecord | None: ...


class KeySecrets(Protocol):
    def open_key_secret(self, record: KeyRecord) -> bytes:
        """The HMAC secret of ``record``, opened in memory; raises VaultError if it will not open."""
        ...


class OrderState(StrEnum):
    """The gateway's own view of an order's placement, apart from the venue's status."""

    PENDING = "pending"  # recorded, not yet confirmed by the venue
    PLACED = "placed"  # the venue accepted it; ``snapshot`` holds its last known state
    REJECTED = "rejected"  # the venue refused it; ``reject_reason`` says why


@dataclass(slots=True)
class OrderRecord:
    id: str
    account: str
    key_id: str
    request: OrderRequest
    fingerprint: str
    state: OrderState
    created_at: datetime
    updated_at: datetime
    venue_order_id: str | None = None
    reject_reason: str | None = None
    snapshot: VenueOrder | None = None

    @property
    def status(self) -> str:
        """The status a caller sees: the venue's, or ``pending`` / ``rejected`` before it."""
        if self.snapshot is not None:
            return self.snapshot.status.value
        return "rejected" if self.state is OrderState.REJECTED else "pending"


class OrderStore(Protocol):
    async def get(self, order_id: str) -> OrderRecord | None: ...

    async def find(self, account: str, client_order_id: str) -> OrderRecord | None: ...

    async def insert(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> bool:
        """Insert a new record together with its ledger entry, atomically; False (and nothing
        written) if the account already has this client order id."""
        ...

    async def save(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> None:
        """Store the record's new state together with its ledger entry, atomically."""
        ...

    def save_later(self, record: OrderRecord, entry: tuple[str, Mapping[str, object]]) -> Awaitable[int]:
        """Like :meth:`save`, queued: the returned awaitable completes once it is durable."""
        ...

    async def list(
        self, account: str, *, symbol: str | None, statuses: Sequence[str] | None, limit: int
    ) -> Sequence[OrderRecord]:
        """Newest first; ``statuses`` filters on :attr:`OrderRecord.status`."""
        ...


class Ledger(Protocol):
    async def append(self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None) -> int:
        """Append an entry and return its index once it is durable.  ``write``, if given, runs
        in the same transaction; if it raises :class:`RowConflict` (having written nothing),
        the entry is skipped and ``append`` raises that exception."""
        ...

    def enqueue(
        self, kind: str, data: Mapping[str, object], *, write: RowWrite | None = None
    ) -> Awaitable[int]:
        """Queue an entry without waiting; the caller must await the result before it
        acknowledges anything that depends on it.  Entries queued back to back share a commit."""
        ...

    async def receipt(self, index: int) -> dict[str, object] | None:
        """A receipt for durable entry ``index``: its leaf hash and a signed tree head that
        includes it (``ledger/heads.py``); None when this ledger does not sign heads."""
        ...


class Venue(Protocol):
    """A trading venue seen through Bastion's domain types.  Adapters convert wire formats
    at this boundary and raise ``VenueRejected`` or ``VenueError``."""

    name: str

    async def instruments(self) -> Sequence[Instrument]: ...

    async def ticker(self, symbol: str) -> Ticker | None: ...

    async def place(self, account: str, request: OrderRequest) -> VenueOrder: ...

    async def cancel(self, account: str, venue_order_id: str) -> VenueOrder: ...

    async def order(self, account: str, venue_order_id: str) -> VenueOrder | None: ...

    async def open_orders(self, account: str, symbol: str | None) -> Sequence[VenueOrder]: ...

    async def balances(self, account: str) -> Sequence[Balance]: ...


class MarketData(Protocol):
    """What the risk stage reads of the market, synchronously: it must answer from memory
    (the paper venue computes it; a real venue adapter keeps it from its market-data feed)."""

    def instrument(self, symbol: str) -> Instrument | None: ...

    def quote(self, symbol: str) -> Ticker | None:
        """The latest bid, ask and last price, or None when there is none (risk then fails closed)."""
        ...


class LedgerProofs(Protocol):
    """The ledger's signed head and proofs (``ledger/service.py``)."""

    async def head(self) -> Any: ...

    async def proof(self, index: int, tree_size: int) -> tuple[LedgerRow, bytes, list[bytes]] | None: ...

    async def consistency(self, first: int, second: int) -> list[bytes] | None: ...


OrderListener = Callable[[str, VenueOrder], None]
"""Called with (account, order) each time the venue reports a change of one of its orders."""


class OrderFeed(Protocol):
    def subscribe(self, listener: OrderListener) -> None:
        """Report every order change (placement, fill, cancel, expiry) to ``listener``."""
        ...


class TradingVenue(Venue, MarketData, OrderFeed, Protocol):
    """A whole venue adapter as the services use it: the ports above, plus its life cycle,
    accounts and credential audit (``venues/paper``, ``venues/binance``)."""

    async def start(self) -> None:
        """What every process needs (a CLI one too); no market data."""
        ...

    async def serve(self) -> None:
        """What a serving process needs besides: market data kept fresh."""
        ...

    async def close(self) -> None: ...

    def unsubscribe(self, listener: OrderListener) -> None: ...

    async def create_account(self, account: str) -> None: ...

    def liquidity(self, symbol: str) -> Decimal | None:
        """A typical 24-hour volume in the quote currency, or None when unknown."""
        ...

    async def audit_credentials(self, credentials: Mapping[str, object]) -> CredentialPermissions:
        """What a venue credential may do, as the venue reports it."""
        ...


@dataclass(frozen=True, slots=True)
class LedgerRow:
    index: int
    body: bytes
    hash: bytes


RowWrite = Callable[[Any], None]
"""A write done in the same transaction as a ledger entry.  It receives the store's
connection (a SQLAlchemy ``Connection`` for SQL stores; ignored by in-memory ones)."""


@dataclass(slots=True)
class PendingEntry:
    kind: str
    data: Mapping[str, object]
    time_us: int
    index: int = field(default=-1)
    leaf: bytes = b""  # its Merkle leaf hash, set when written
    write: RowWrite | None = None
    # Set when ``write`` raised RowConflict (it wrote nothing): the entry is skipped, its caller gets this.
    error: Exception | None = None


class RowConflict(Exception):
    """Raised by a row write that found its unique key taken and wrote nothing."""


class HoldStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@dataclass(slots=True)
class HoldRecord:
    """An order the fraud stage held until an operator decides (``bastion fraud confirm``)."""

    id: str
    account: str
    key_id: str
    client_order_id: str
    fingerprint: str
    score: float
    rules: tuple[str, ...]
    reason: str
    created_at: datetime
    status: HoldStatus = HoldStatus.PENDING
    decided_at: datetime | None = None
    decided_by: str | None = None


class FraudStore(Protocol):
    """What the fraud stage keeps beyond a process: where keys were used, owners, holds."""

    async def sightings(
        self, *, key_id: str | None = None, account: str | None = None
    ) -> list[tuple[str, str]]:
        """(address, network) pairs learned for a key, or for any key of an account."""
        ...

    async def add_sightings(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        """Store (key_id, account, address, network, first seen); known pairs are kept as they are."""
        ...

    async def owner(self, account: str) -> str | None: ...

    async def create_hold(
        self, hold: HoldRecord, entry: tuple[str, Mapping[str, object]] | None = None
    ) -> None: ...

    async def hold(self, hold_id: str) -> HoldRecord | None: ...

    async def holds(self, *, status: HoldStatus | None = None, limit: int = 100) -> list[HoldRecord]: ...
