"""Test helpers: build request contexts the way the HTTP edge does, signed or not."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.clock import FakeClock
from bastion.config import FraudSettings, RateLimitSettings, ShieldSettings
from bastion.crypto import keys as keyfmt
from bastion.crypto.httpsig import sign_request
from bastion.domain.principals import Scope
from bastion.fraud.engine import FraudEngine
from bastion.pipeline.context import RequestContext
from bastion.pipeline.fraud import FraudCheck, FraudMarket
from bastion.pipeline.ratelimit import RateLimit
from bastion.pipeline.shield import Shield
from bastion.ports import Clock, KeyRecord, Ledger, MarketData
from bastion.risk.book import ExposureBook
from bastion.risk.engine import RiskEngine
from bastion.schema import ROUTES
from bastion.state.fraud import FraudMemory
from bastion.state.policies import PolicyCache
from bastion.state.ratelimit import MemoryRateStore
from bastion.state.trading import TradingStates
from bastion.store.memory import MemoryFraudStore, MemoryLedger

ROUTE = {r.name: r for r in ROUTES}
ALL_SCOPES = frozenset(Scope)


@dataclass
class BotKey:
    private: Ed25519PrivateKey
    record: KeyRecord

    @property
    def key_id(self) -> str:
        return self.record.key_id


def make_key(
    clock: FakeClock, account: str = "alice", scopes: frozenset[Scope] = ALL_SCOPES, **kw: Any
) -> BotKey:
    private = Ed25519PrivateKey.generate()
    record = KeyRecord(
        key_id=keyfmt.new_key_id(),
        account=account,
        alg="ed25519",
        public_key=keyfmt.raw_public_key(private.public_key()),
        scopes=scopes,
        created_at=clock.now(),
        expires_at=kw.get("expires_at", clock.now() + timedelta(days=90)),
        revoked_at=kw.get("revoked_at"),
    )
    return BotKey(private, record)


@dataclass
class Req:
    route: str
    body: Any = None
    path_params: dict[str, str] = field(default_factory=dict)
    query: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)

    def raw_body(self) -> bytes:
        if self.body is None:
            return b""
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def path_of(route_name: str, params: dict[str, str]) -> str:
    path = ROUTE[route_name].path
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


def context(req: Req, clock: FakeClock, *, authority: str = "127.0.0.1:8443") -> RequestContext:
    route = ROUTE[req.route]
    body = req.raw_body()
    headers = {"host": [authority]} | dict(req.headers)
    if body and "content-type" not in headers:
        headers["content-type"] = ["application/json"]
    return RequestContext(
        request_id="req_test",
        route=route,
        method=route.method,
        scheme="https",
        authority=authority,
        path=path_of(req.route, req.path_params),
        query=req.query,
        headers=headers,
        body=body,
        client_ip="127.0.0.1",
        path_params=dict(req.path_params),
        received_at=clock.now(),
    )


def signed(
    req: Req,
    key: BotKey,
    clock: FakeClock,
    *,
    nonce: str | None = None,
    created: int | None = None,
    authority: str = "127.0.0.1:8443",
) -> RequestContext:
    route = ROUTE[req.route]
    body = req.raw_body()
    sig = sign_request(
        private_key=key.private,
        key_id=key.key_id,
        method=route.method,
        url_scheme="https",
        authority=authority,
        path=path_of(req.route, req.path_params),
        query=req.query,
        body=body,
        created=created if created is not None else int(clock.now().timestamp()),
        nonce=nonce,
    )
    req.headers = {k: [v] for k, v in sig.items()} | req.headers
    return context(req, clock, authority=authority)


def order_body(cid: str = "c1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_order_id": cid,
        "symbol": "X-USD",
        "side": "buy",
        "type": "limit",
        "quantity": "1",
        "price": "100",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def dec(text: str) -> Decimal:
    return Decimal(text)


class _NoLiquidity:
    """A market that states no liquidity (the fraud stage's illiquid rule then stays silent)."""

    def __init__(self, market: MarketData) -> None:
        self.instrument = market.instrument
        self.quote = market.quote

    def liquidity(self, symbol: str) -> Decimal | None:
        return None


def risk_parts(
    market: MarketData, clock: Clock | None = None, ledger: Ledger | None = None
) -> dict[str, Any]:
    """The shield's and risk stage's parts for ``build_stages``: default limits, no policies,
    every state active."""
    policies = PolicyCache()
    fraud_market = market if hasattr(market, "liquidity") else _NoLiquidity(market)
    return {
        "fraud": FraudCheck(
            FraudEngine(FraudSettings()),
            FraudMemory(MemoryFraudStore()),
            cast(FraudMarket, fraud_market),
            clock or FakeClock(),
        ),
        "risk": RiskEngine(ExposureBook(), market),
        "policies": policies,
        "trading_states": TradingStates(),
        "shield": Shield(ShieldSettings(), clock or FakeClock(), ledger or MemoryLedger()),
        "ratelimit": RateLimit(
            MemoryRateStore(clock or FakeClock()),
            MemoryRateStore(clock or FakeClock()),
            policies,
            RateLimitSettings(),
        ),
    }
