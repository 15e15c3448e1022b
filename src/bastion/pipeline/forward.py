"""Forward stage (terminal): the only stage that talks to the venue.

Placing an order is idempotent on ``(account, client_order_id)``:

1. under a per-id lock, look the id up; a different order under the same id is a 409;
2. a new id is first recorded as ``pending`` together with its ``order.submit`` ledger entry,
   in one transaction (the database's unique constraint decides between replicas), and only
   then is the venue called, with the same client order id (the venue dedups too);
3. the venue's answer is stored and recorded; a retry returns the stored order (status 200)
   and never trades twice; a retry of a ``pending`` order asks the venue again with the same id.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ClassVar

import msgspec

from bastion.domain.money import format_decimal
from bastion.domain.orders import OrderRequest, VenueOrder
from bastion.domain.principals import Principal
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode, StoreError, VenueError, VenueRejected
from bastion.ledger.chain import decode_body
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, Ledger, LedgerProofs, OrderRecord, OrderState, OrderStore, Venue
from bastion.schema import (
    ConsistencyProofView,
    ConsistencyQuery,
    InclusionProofView,
    ListOrdersQuery,
    ProofQuery,
    TreeHeadView,
)

STATUS_FILTERS: dict[str, tuple[str, ...] | None] = {
    "open": ("new", "partially_filled"),
    "closed": ("filled", "canceled", "rejected", "expired"),
    "all": None,
}
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_order_id() -> str:
    """``ord_`` + 24 base62 characters from 143 random bits: unguessable, not sequential."""
    number = int.from_bytes(secrets.token_bytes(18), "big")
    chars = []
    for _ in range(24):
        number, rem = divmod(number, 62)
        chars.append(_ID_ALPHABET[rem])
    return "ord_" + "".join(chars)


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _order_facts(record: OrderRecord) -> dict[str, object]:
    req = record.request
    facts: dict[str, object] = {
        "order_id": record.id,
        "account": record.account,
        "key_id": record.key_id,
        "client_order_id": req.client_order_id,
        "symbol": req.symbol,
        "side": req.side.value,
        "type": req.type.value,
        "quantity": format_decimal(req.quantity),
        "price": None if req.price is None else format_decimal(req.price),
        "time_in_force": req.time_in_force.value,
    }
    if req.label is not None:
        facts["label"] = req.label
    return facts


def _state_facts(record: OrderRecord, venue_order: VenueOrder) -> dict[str, object]:
    return {
        "order_id": record.id,
        "account": record.account,
        "venue_order_id": venue_order.venue_order_id,
        "status": venue_order.status.value,
        "filled_quantity": format_decimal(venue_order.filled_quantity),
        "fills": len(venue_order.fills),
    }


class Forward:
    name: ClassVar[str] = "forward"

    def __init__(
        self,
        orders: OrderStore,
        venue: Venue,
        ledger: Ledger,
        clock: Clock,
        venue_timeout: float = 10.0,
        proofs: LedgerProofs | None = None,
    ) -> None:
        if venue_timeout <= 0:
            raise ValueError("venue_timeout must be positive")
        self._orders = orders
        self._venue = venue
        self._ledger = ledger
        self._clock = clock
        self._timeout = venue_timeout
        self._locks = KeyedLocks()
        self._proofs = proofs
        self._handlers: dict[str, Callable[[RequestContext, Principal], Awaitable[Verdict]]] = {
            "place_order": self._place,
            "get_order": self._get,
            "cancel_order": self._cancel,
            "list_orders": self._list,
            "get_account": self._account,
            "list_markets": self._markets,
            "get_ticker": self._ticker,
            "ledger_head": self._ledger_head,
            "ledger_proof": self._ledger_proof,
            "ledger_consistency": self._ledger_consistency,
        }

    async def __call__(self, ctx: RequestContext) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, "no principal")
        handler = self._handlers.get(ctx.route.name)
        if handler is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, f"no handler for route {ctx.route.name}")
        try:
            async with asyncio.timeout(self._timeout):
                return await handler(ctx, principal)
        except TimeoutError:
            return Deny(self.name, ErrorCode.VENUE_UNAVAILABLE, "venue call timed out")
        except VenueRejected as exc:
            return Deny(self.name, ErrorCode.ORDER_REJECTED, f"venue rejected: {exc}", exc.reason)
        except VenueError as exc:
            return Deny(self.name, ErrorCode.VENUE_UNAVAILABLE, f"venue error: {exc}")

    # -- orders ---------------------------------------------------------------------------
    async def _place(self, ctx: RequestContext, principal: Principal) -> Verdict:
        request = ctx.payload
        if not isinstance(request, OrderRequest):
            return Deny(self.name, ErrorCode.BAD_REQUEST, "no decoded order")
        fingerprint = request.fingerprint()
        async with self._locks.hold(f"{principal.account}\x1f{request.client_order_id}"):
            now = self._clock.now()
            record = OrderRecord(
                id=new_order_id(),
                account=principal.account,
                key_id=principal.key_id,
                request=request,
                fingerprint=fingerprint,
                state=OrderState.PENDING,
                created_at=now,
                updated_at=now,
            )
            # Insert first: the unique key decides, here and between replicas; a retry conflicts.
            if await self._orders.insert(record, ("order.submit", _order_facts(record))):
                ctx.outcome["order_id"] = record.id
                return await self._submit(ctx, record, status=201)
            found = await self._orders.find(principal.account, request.client_order_id)
            if found is None:
                raise StoreError("client order id conflict but no stored order")
            record = found
            ctx.outcome["order_id"] = record.id
            if record.fingerprint != fingerprint:
                return Deny(self.name, ErrorCode.IDEMPOTENCY_CONFLICT, f"differs from order {record.id}")
            ctx.outcome["idempotent_replay"] = True
            if record.state is OrderState.PENDING:  # an earlier attempt never heard back from the venue
                await self._ledger.append("order.resubmit", _order_facts(record))
                return await self._submit(ctx, record, status=200)
            if record.state is OrderState.REJECTED:
                reason = record.reject_reason or "REJECTED"
                return Deny(
                    self.name, ErrorCode.ORDER_REJECTED, f"replay of rejected order: {reason}", reason
                )
            await self._refresh(record)
            ctx.status, ctx.result = 200, record
            return ALLOW

    async def _submit(self, ctx: RequestContext, record: OrderRecord, *, status: int) -> Verdict:
        """Call the venue for a recorded order (its submit entry is already durable)."""
        try:
            venue_order = await self._venue.place(record.account, record.request)
        except VenueRejected as exc:
            record.state = OrderState.REJECTED
            record.reject_reason = exc.reason
            record.updated_at = self._clock.now()
            await self._orders.save(record, ("order.rejected", {"order_id": record.id, "reason": exc.reason}))
            return Deny(self.name, ErrorCode.ORDER_REJECTED, f"venue rejected: {exc}", exc.reason)
        record.state = OrderState.PLACED
        record.venue_order_id = venue_order.venue_order_id
        record.snapshot = venue_order
        record.updated_at = self._clock.now()
        # Durable before the answer: the log phase awaits it together with the request's entry.
        ctx.pending.append(
            self._orders.save_later(record, ("order.accepted", _state_facts(record, venue_order)))
        )
        ctx.status, ctx.result = status, record
        return ALLOW

    async def _store_snapshot(self, record: OrderRecord, venue_order: VenueOrder, kind: str) -> None:
        record.snapshot = venue_order
        record.updated_at = self._clock.now()
        await self._orders.save(record, (kind, _state_facts(record, venue_order)))

    async def _refresh(self, record: OrderRecord) -> None:
        """Bring a placed order's snapshot up to date with the venue."""
        if record.state is not OrderState.PLACED or record.venue_order_id is None:
            return
        if record.snapshot is not None and not record.snapshot.status.is_open:
            return
        async with self._locks.hold(record.id):
            current = await self._venue.order(record.account, record.venue_order_id)
            if current is not None and current != record.snapshot:
                await self._store_snapshot(record, current, "order.update")

    async def _get(self, ctx: RequestContext, principal: Principal) -> Verdict:
        record = ctx.order
        if record is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, "authz loaded no order")
        await self._refresh(record)
        ctx.result = record
        return ALLOW

    async def _cancel(self, ctx: RequestContext, principal: Principal) -> Verdict:
        record = ctx.order
        if record is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, "authz loaded no order")
        ctx.outcome["order_id"] = record.id
        if record.state is not OrderState.PLACED or record.venue_order_id is None:
            return Deny(
                self.name, ErrorCode.ORDER_REJECTED, "order never reached the venue", "ORDER_NOT_OPEN"
            )
        async with self._locks.hold(record.id):
            try:
                canceled = await self._venue.cancel(record.account, record.venue_order_id)
            except VenueRejected as exc:
                current = await self._venue.order(record.account, record.venue_order_id)
                if current is not None and current != record.snapshot:
                    await self._store_snapshot(record, current, "order.update")
                return Deny(self.name, ErrorCode.ORDER_REJECTED, f"cancel rejected: {exc}", exc.reason)
            await self._store_snapshot(record, canceled, "order.canceled")
        ctx.result = record
        return ALLOW

    async def _list(self, ctx: RequestContext, principal: Principal) -> Verdict:
        query = ctx.query_params
        if not isinstance(query, ListOrdersQuery):
            query = ListOrdersQuery()
        statuses = STATUS_FILTERS[query.status]
        records = await self._orders.list(
            principal.account, symbol=query.symbol, statuses=statuses, limit=query.limit
        )
        open_now = {
            o.venue_order_id: o for o in await self._venue.open_orders(principal.account, query.symbol)
        }
        for record in records:
            snap = record.snapshot
            if snap is None or not snap.status.is_open:
                continue
            current = open_now.get(snap.venue_order_id)
            if current is None:
                await self._refresh(record)
            elif current != snap:
                await self._store_snapshot(record, current, "order.update")
        if statuses is not None:  # an order may have closed while we refreshed it
            records = [r for r in records if r.status in statuses]
        ctx.result = list(records)
        return ALLOW

    # -- account and market data -----------------------------------------------------------
    async def _account(self, ctx: RequestContext, principal: Principal) -> Verdict:
        ctx.result = (principal.account, await self._venue.balances(principal.account))
        return ALLOW

    async def _markets(self, ctx: RequestContext, principal: Principal) -> Verdict:
        ctx.result = await self._venue.instruments()
        return ALLOW

    # -- the ledger (RFC 9162 proofs; a key sees only its own account's entries) -------------
    async def _ledger_head(self, ctx: RequestContext, principal: Principal) -> Verdict:
        head = None if self._proofs is None else await self._proofs.head()
        if head is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, "no signed tree head yet")
        ctx.result = msgspec.convert(head.to_json(), TreeHeadView)
        return ALLOW

    async def _ledger_proof(self, ctx: RequestContext, principal: Principal) -> Verdict:
        query = ctx.query_params
        if self._proofs is None or not isinstance(query, ProofQuery):
            return Deny(self.name, ErrorCode.NOT_FOUND, "no proofs here")
        index = int(ctx.path_params["index"])
        found = await self._proofs.proof(index, query.tree_size)
        if found is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, f"no entry {index} in a tree of {query.tree_size}")
        row, leaf, proof = found
        try:
            owner = decode_body(row.body).data.get("account")
        except msgspec.DecodeError:
            owner = None
        if owner != principal.account:  # another account's entry is answered like a missing one
            return Deny(self.name, ErrorCode.NOT_FOUND, f"entry {index} is not account {principal.account}'s")
        ctx.result = InclusionProofView(
            index, query.tree_size, leaf.hex(), [p.hex() for p in proof], base64.b64encode(row.body).decode()
        )
        return ALLOW

    async def _ledger_consistency(self, ctx: RequestContext, principal: Principal) -> Verdict:
        query = ctx.query_params
        if self._proofs is None or not isinstance(query, ConsistencyQuery):
            return Deny(self.name, ErrorCode.NOT_FOUND, "no proofs here")
        proof = await self._proofs.consistency(query.first, query.second)
        if proof is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, "no such tree sizes")
        ctx.result = ConsistencyProofView(query.first, query.second, [p.hex() for p in proof])
        return ALLOW

    async def _ticker(self, ctx: RequestContext, principal: Principal) -> Verdict:
        ticker = await self._venue.ticker(ctx.path_params["symbol"])
        if ticker is None:
            return Deny(self.name, ErrorCode.NOT_FOUND, "unknown symbol")
        ctx.result = ticker
        return ALLOW
