"""Authorisation stage: the key's scopes allow the route, and the key's account owns the object.

The scopes are the key's own, capped by its account policy's ``scopes`` when that is set.

An order of another account is answered exactly like an order that does not exist (404), so
a caller cannot learn which ids exist.
"""

from __future__ import annotations

from typing import ClassVar

from bastion.domain.verdict import ALLOW, Deny, Verdict
from bastion.errors import ErrorCode
from bastion.pipeline.context import RequestContext
from bastion.ports import OrderStore
from bastion.state.policies import PolicyCache


class Authorize:
    name: ClassVar[str] = "authz"

    def __init__(self, orders: OrderStore, policies: PolicyCache | None = None) -> None:
        self._orders = orders
        self._policies = policies

    async def __call__(self, ctx: RequestContext) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Deny(self.name, ErrorCode.AUTHENTICATION_FAILED, "no principal")
        scopes = (
            principal.scopes if self._policies is None else self._policies.for_principal(principal).scopes
        )
        if ctx.route.scope not in scopes:
            return Deny(self.name, ErrorCode.FORBIDDEN, f"key lacks scope {ctx.route.scope.value}")
        order_id = ctx.path_params.get("id")
        if order_id is not None:
            record = await self._orders.get(order_id)
            if record is None:
                return Deny(self.name, ErrorCode.NOT_FOUND, "no such order")
            if record.account != principal.account:
                return Deny(self.name, ErrorCode.NOT_FOUND, f"order belongs to account {record.account}")
            ctx.order = record
        return ALLOW
