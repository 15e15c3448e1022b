from __future__ import annotations

from decimal import Decimal

from bastion.clock import FakeClock
from bastion.domain.orders import OrderRequest, OrderType, Side, TimeInForce
from bastion.domain.principals import Principal, Scope
from bastion.domain.verdict import Allow, Deny
from bastion.errors import ErrorCode
from bastion.pipeline.authz import Authorize
from bastion.ports import OrderRecord, OrderState
from bastion.store.memory import MemoryOrderStore
from tests.support import Req, context

clock = FakeClock()
ORDER_ID = "ord_" + "b" * 24


async def store_with_order(account: str) -> MemoryOrderStore:
    store = MemoryOrderStore()
    request = OrderRequest("c1", "X-USD", Side.BUY, OrderType.MARKET, Decimal(1), None, TimeInForce.IOC)
    await store.insert(
        entry=("order.submit", {}),
        record=OrderRecord(
            ORDER_ID,
            account,
            "bst_k",
            request,
            request.fingerprint(),
            OrderState.PLACED,
            clock.now(),
            clock.now(),
        ),
    )
    return store


def ctx_for(route: str, scopes: set[Scope], account: str = "alice", **params: str) -> object:
    ctx = context(Req(route, path_params=params), clock)
    ctx.principal = Principal("bst_k", account, frozenset(scopes))
    return ctx


async def test_scope_is_required_per_route() -> None:
    authz = Authorize(MemoryOrderStore())
    cases = [
        ("place_order", {Scope.READ}),
        ("get_account", {Scope.TRADE}),
        ("list_orders", {Scope.CANCEL, Scope.TRADE}),
    ]
    for route, scopes in cases:
        verdict = await authz(ctx_for(route, scopes))  # type: ignore[arg-type]
        assert isinstance(verdict, Deny) and verdict.code is ErrorCode.FORBIDDEN, route
    assert isinstance(await authz(ctx_for("get_account", {Scope.READ})), Allow)  # type: ignore[arg-type]


async def test_cancel_needs_cancel_scope_not_trade() -> None:
    authz = Authorize(await store_with_order("alice"))
    verdict = await authz(ctx_for("cancel_order", {Scope.TRADE, Scope.READ}, id=ORDER_ID))  # type: ignore[arg-type]
    assert isinstance(verdict, Deny) and verdict.code is ErrorCode.FORBIDDEN


async def test_another_accounts_order_is_indistinguishable_from_a_missing_one() -> None:
    authz = Authorize(await store_with_order("bob"))
    foreign = await authz(ctx_for("get_order", {Scope.READ}, id=ORDER_ID))  # type: ignore[arg-type]
    missing = await authz(ctx_for("get_order", {Scope.READ}, id="ord_" + "c" * 24))  # type: ignore[arg-type]
    assert isinstance(foreign, Deny) and isinstance(missing, Deny)
    assert foreign.code is missing.code is ErrorCode.NOT_FOUND
    assert foreign.public_reason is missing.public_reason is None
    assert "bob" in foreign.reason  # the ledger learns whose order it was


async def test_owner_gets_the_order_loaded() -> None:
    authz = Authorize(await store_with_order("alice"))
    ctx = ctx_for("cancel_order", {Scope.CANCEL}, id=ORDER_ID)
    assert isinstance(await authz(ctx), Allow)  # type: ignore[arg-type]
    assert ctx.order is not None and ctx.order.id == ORDER_ID  # type: ignore[attr-defined]
