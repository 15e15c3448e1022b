"""The public API contract: request and response structs and the route table.

The same structs decode requests (strictly: unknown fields are refused), encode responses
(only the fields declared here ever leave Bastion) and generate ``/openapi.json``.  No web
framework is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from bastion.domain.instruments import Instrument
from bastion.domain.money import format_decimal
from bastion.domain.orders import Balance, OrderType, Side, Ticker, TimeInForce
from bastion.domain.principals import Scope
from bastion.ports import OrderRecord

SYMBOL_PATTERN = r"^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?$(?!\n)"
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,36}$(?!\n)"
ORDER_ID_PATTERN = r"^ord_[0-9A-Za-z]{24}$(?!\n)"
DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$(?!\n)"

Symbol = Annotated[str, Meta(pattern=SYMBOL_PATTERN, description="Instrument symbol, e.g. BTC-USD")]
ClientOrderId = Annotated[
    str, Meta(pattern=CLIENT_ORDER_ID_PATTERN, description="Unique per account; makes retries idempotent")
]
Label = Annotated[
    str,
    Meta(min_length=1, max_length=64, description="Free text (checked for injection), e.g. a strategy name"),
]
DecimalString = Annotated[
    str, Meta(pattern=DECIMAL_PATTERN, max_length=40, description="Non-negative decimal as a string")
]


class PlaceOrder(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    client_order_id: ClientOrderId
    symbol: Symbol
    side: Side
    type: OrderType
    quantity: DecimalString
    price: DecimalString | None = None
    time_in_force: TimeInForce | None = None
    label: Label | None = None


class ListOrdersQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    status: Literal["open", "closed", "all"] = "all"
    symbol: Symbol | None = None
    limit: Annotated[int, Meta(ge=1, le=500)] = 100


class ProofQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tree_size: Annotated[int, Meta(ge=1, le=2**62)]


class ConsistencyQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    first: Annotated[int, Meta(ge=1, le=2**62)]
    second: Annotated[int, Meta(ge=1, le=2**62)]


class FillView(msgspec.Struct, frozen=True):
    price: str
    quantity: str
    time: datetime


OrderStatusName = Literal["pending", "new", "partially_filled", "filled", "canceled", "rejected", "expired"]
_STATUS_NAMES: dict[str, OrderStatusName] = {
    name: name for name in ("pending", "new", "partially_filled", "filled", "canceled", "rejected", "expired")
}


class OrderView(msgspec.Struct, frozen=True):
    id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: str
    price: str | None
    status: Literal["pending", "new", "partially_filled", "filled", "canceled", "rejected", "expired"]
    filled_quantity: str
    average_price: str | None
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime
    fills: list[FillView]
    label: str | None = None
    receipt: ReceiptView | None = None


class TreeHeadView(msgspec.Struct, frozen=True):
    tree_size: int
    root_hash: str
    timestamp: int
    signature: str
    key_version: int


class ReceiptView(msgspec.Struct, frozen=True):
    """The ledger entry that records this request: its index, its leaf hash and a tree head,
    signed by Bastion, that includes it (verify with the ledger's public key and an inclusion
    proof: docs/ledger.md)."""

    index: int
    leaf_hash: str
    tree_head: TreeHeadView


class InclusionProofView(msgspec.Struct, frozen=True):
    index: int
    tree_size: int
    leaf_hash: str
    proof: list[str]
    entry: str  # the entry's bytes, base64: its leaf hash is SHA-256(0x00 || entry)


class ConsistencyProofView(msgspec.Struct, frozen=True):
    first: int
    second: int
    proof: list[str]


class OrdersView(msgspec.Struct, frozen=True):
    orders: list[OrderView]


class BalanceView(msgspec.Struct, frozen=True):
    asset: str
    free: str
    locked: str


class AccountView(msgspec.Struct, frozen=True):
    account: str
    balances: list[BalanceView]


class InstrumentView(msgspec.Struct, frozen=True):
    symbol: str
    base: str
    quote: str
    asset_class: str
    tick_size: str
    lot_size: str
    min_notional: str


class MarketsView(msgspec.Struct, frozen=True):
    markets: list[InstrumentView]


class TickerView(msgspec.Struct, frozen=True):
    symbol: str
    bid: str
    ask: str
    last: str
    time: datetime


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    request_id: str
    reason: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class HealthView(msgspec.Struct, frozen=True):
    status: str
    venue: str
    # a dependency that is not ok, by name (for example "ratelimit": "redis unreachable")
    checks: dict[str, str] = msgspec.field(default_factory=dict)


# -- routes -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    method: str
    path: str
    scope: Scope
    summary: str
    response: type[msgspec.Struct]
    success: int = 200
    body: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 429)
    weight: int = 1  # what one call costs in rate limits


_ID = {"id": ORDER_ID_PATTERN}
ENTRY_INDEX_PATTERN = r"^(0|[1-9][0-9]{0,17})$(?!\n)"
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "place_order",
        "POST",
        "/v1/orders",
        Scope.TRADE,
        "Place an order (idempotent on client_order_id)",
        OrderView,
        success=201,
        body=PlaceOrder,
        errors=(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
    ),
    RouteSpec(
        "list_orders",
        "GET",
        "/v1/orders",
        Scope.READ,
        "List this account's orders",
        OrdersView,
        query=ListOrdersQuery,
        weight=5,
    ),
    RouteSpec(
        "get_order",
        "GET",
        "/v1/orders/{id}",
        Scope.READ,
        "Get one order",
        OrderView,
        path_params=_ID,
        errors=(400, 401, 403, 404, 429),
    ),
    RouteSpec(
        "cancel_order",
        "DELETE",
        "/v1/orders/{id}",
        Scope.CANCEL,
        "Cancel an open order",
        OrderView,
        path_params=_ID,
        errors=(400, 401, 403, 404, 422, 429, 503),
    ),
    RouteSpec(
        "get_account", "GET", "/v1/account", Scope.READ, "Balances of this account", AccountView, weight=2
    ),
    RouteSpec(
        "list_markets", "GET", "/v1/markets", Scope.READ, "Instruments and their rules", MarketsView, weight=2
    ),
    RouteSpec(
        "ledger_head",
        "GET",
        "/v1/ledger/head",
        Scope.READ,
        "The ledger's latest signed tree head (RFC 9162)",
        TreeHeadView,
        errors=(400, 401, 403, 404, 429),  # 404: no head signed yet
    ),
    RouteSpec(
        "ledger_proof",
        "GET",
        "/v1/ledger/entries/{index}/proof",
        Scope.READ,
        "An entry of this account's and its inclusion proof in the tree of tree_size entries",
        InclusionProofView,
        query=ProofQuery,
        path_params={"index": ENTRY_INDEX_PATTERN},
        errors=(400, 401, 403, 404, 429),
    ),
    RouteSpec(
        "ledger_consistency",
        "GET",
        "/v1/ledger/consistency",
        Scope.READ,
        "A consistency proof between two tree sizes (RFC 9162)",
        ConsistencyProofView,
        query=ConsistencyQuery,
        errors=(400, 401, 403, 404, 429),  # 404: a tree size the ledger does not have
    ),
    RouteSpec(
        "get_ticker",
        "GET",
        "/v1/markets/{symbol}/ticker",
        Scope.READ,
        "Best bid, ask and last price",
        TickerView,
        path_params={"symbol": SYMBOL_PATTERN},
        errors=(400, 401, 403, 404, 429),
    ),
)


# -- views ------------------------------------------------------------------------------------
_d = format_decimal


def order_view(record: OrderRecord, receipt: dict[str, object] | None = None) -> OrderView:
    req = record.request
    snap = record.snapshot
    status = snap.status.value if snap is not None else record.status
    return OrderView(
        id=record.id,
        client_order_id=req.client_order_id,
        symbol=req.symbol,
        side=req.side,
        type=req.type,
        time_in_force=req.time_in_force,
        quantity=_d(req.quantity),
        price=None if req.price is None else _d(req.price),
        status=_STATUS_NAMES[status],
        filled_quantity=_d(snap.filled_quantity) if snap else "0",
        average_price=_d(snap.average_price) if snap and snap.average_price is not None else None,
        reject_reason=record.reject_reason,
        created_at=record.created_at,
        updated_at=snap.updated_at if snap else record.updated_at,
        fills=[FillView(_d(f.price), _d(f.quantity), f.time) for f in snap.fills] if snap else [],
        label=req.label,
        receipt=None if receipt is None else msgspec.convert(receipt, ReceiptView),
    )


def account_view(account: str, balances: Sequence[Balance]) -> AccountView:
    return AccountView(account, [BalanceView(b.asset, _d(b.free), _d(b.locked)) for b in balances])


def markets_view(instruments: Sequence[Instrument]) -> MarketsView:
    return MarketsView(
        [
            InstrumentView(
                i.symbol,
                i.base,
                i.quote,
                i.asset_class.value,
                _d(i.tick_size),
                _d(i.lot_size),
                _d(i.min_notional),
            )
            for i in instruments
        ]
    )


def ticker_view(ticker: Ticker) -> TickerView:
    return TickerView(ticker.symbol, _d(ticker.bid), _d(ticker.ask), _d(ticker.last), ticker.time)
