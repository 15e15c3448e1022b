"""What a request carries through the pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from bastion.crypto.httpsig import ParsedSignature, RequestView
from bastion.domain.principals import Principal
from bastion.domain.verdict import Verdict
from bastion.ports import KeyRecord, OrderRecord
from bastion.schema import RouteSpec


@dataclass(slots=True)
class RequestContext:
    request_id: str
    route: RouteSpec
    method: str
    scheme: str
    authority: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes
    client_ip: str
    path_params: dict[str, str]
    received_at: datetime
    body_too_large: bool = False
    body_timed_out: bool = False
    # Set by stages as the request moves on.
    payload: object | None = None
    query_params: object | None = None
    signature: ParsedSignature | None = None
    principal: Principal | None = None
    key: KeyRecord | None = None  # the authenticated key's record (its creation time, for fraud)
    order: OrderRecord | None = None
    status: int = 200
    result: object | None = None
    outcome: dict[str, object] = field(default_factory=dict)
    # Writes queued by stages; the log phase awaits them with its own entry before answering.
    pending: list[Awaitable[int]] = field(default_factory=list)
    # Called with the final verdict once every stage has run (a stage's clean-up, e.g. a risk reservation).
    finalizers: list[Callable[[Verdict], None]] = field(default_factory=list)
    # Ed25519 requests: the RFC 9421 signature base that was verified (kept in the ledger as evidence).
    signature_base: bytes | None = None
    # Order answers: the ledger receipt of the request's entry (ledger/heads.py).
    receipt: dict[str, object] | None = None
    # Called with the index of the request's ledger entry once it is durable (alerts cite it).
    recorded: list[Callable[[int], None]] = field(default_factory=list)
    # Headers a stage adds to the answer (rate-limit state, for example).
    response_headers: dict[str, str] = field(default_factory=dict)

    def view(self) -> RequestView:
        return RequestView(self.method, self.scheme, self.authority, self.path, self.query, self.headers)
