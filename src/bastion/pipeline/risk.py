"""Risk stage: pre-trade limits and the kill switch, between authorisation and forwarding.

For a new order it takes the key's effective policy and the trading state in force, and
asks the risk engine (``risk/engine.py``) to check and reserve in one step.  A refusal is
``422 RISK_REJECTED`` with a public reason code (instrument rules answer ``ORDER_REJECTED``
like the venue would), and the detail goes to the ledger.  Cancels always pass the trading
state; only the key's cancel rate can refuse them.

The reservation outlives the stage: the venue's order reports convert it (fills) and free it
(close); when the request ends without the venue taking the order, it is released.  A retry
of an order already placed is never refused for a limit: ``forward`` answers it with the
stored order (or a 409), and nothing trades twice.  There is no switch that skips this stage.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from bastion.domain.orders import OrderRequest
from bastion.domain.principals import Principal
from bastion.domain.trading import TradingState
from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, OrderStore
from bastion.risk.book import TrackedOrder
from bastion.risk.engine import Rejection, RiskEngine
from bastion.state.policies import PolicyCache
from bastion.state.trading import TradingStates

_VENUE_MAY_HOLD = (ErrorCode.VENUE_UNAVAILABLE, ErrorCode.INTERNAL_ERROR)


class RiskCheck:
    name: ClassVar[str] = "risk"

    def __init__(
        self,
        engine: RiskEngine,
        policies: PolicyCache,
        states: TradingStates,
        orders: OrderStore,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._policies = policies
        self._states = states
        self._orders = orders
        self._clock = clock

    async def __call__(self, ctx: RequestContext) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, "no principal")
        route = ctx.route.name
        if route == "place_order":
            return await self._place(ctx, principal)
        if route == "cancel_order":
            policy = self._policies.for_principal(principal)
            refused = self._engine.cancel(principal.key_id, policy, self._clock.now())
            return ALLOW if refused is None else self._deny(refused)
        return ALLOW

    async def _place(self, ctx: RequestContext, principal: Principal) -> Verdict:
        request = ctx.payload
        if not isinstance(request, OrderRequest):
            return Deny(self.name, ErrorCode.BAD_REQUEST, "no decoded order")
        policy = self._policies.for_principal(principal)
        if policy.versions != (0, 0):
            ctx.outcome["policy_versions"] = list(policy.versions)
        state = self._states.for_request(principal.key_id, principal.account)
        if state is TradingState.HALTED:
            return self._deny(Rejection(ErrorCode.RISK_REJECTED, "TRADING_HALTED", "trading is halted"))
        account = principal.account
        if self._engine.book.known(account, request.client_order_id):
            return ALLOW  # a retry of an order in flight or open: forward answers it, nothing trades twice
        result = self._engine.place(principal.key_id, account, policy, state, request, self._clock.now())
        if isinstance(result, Rejection):
            if await self._orders.find(account, request.client_order_id) is not None:
                return ALLOW  # a retry of an order placed earlier: forward returns it (or a 409)
            return self._deny(result)
        ctx.finalizers.append(partial(self._settle, result, ctx))
        return ALLOW

    def _settle(self, reserved: TrackedOrder, ctx: RequestContext, verdict: Verdict) -> None:
        """At the end of the request: release what the venue never took."""
        if reserved.confirmed:
            return
        recorded = "order_id" in ctx.outcome  # forward stored it as pending before calling the venue
        if recorded and isinstance(verdict, Deny) and verdict.code in _VENUE_MAY_HOLD:
            return  # the venue may hold it: keep the reservation until the order's retry settles it
        self._engine.book.release(reserved)

    def _deny(self, rejection: Rejection) -> Deny:
        return Deny(self.name, rejection.code, rejection.detail, rejection.reason)
