"""The Starlette application.

Only the routes in :data:`bastion.schema.ROUTES` exist, plus ``/healthz``, ``/openapi.json``
and ``/metrics`` (this one only for the addresses in ``metrics.allowed_networks``; a 404 for
everyone else); anything else is a structured 404 or 405, recorded in the ledger like any
other refusal.  Bodies are read up to the cap and no further.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.domain.instruments import Instrument
from bastion.domain.orders import Balance, Ticker
from bastion.domain.principals import Scope as KeyScope
from bastion.domain.verdict import Allow, Deny, Hold, Verdict
from bastion.errors import HTTP_STATUS, MESSAGES, ErrorCode
from bastion.http.forwarded import client_of, parse_networks
from bastion.http.headers import SECURITY_HEADERS
from bastion.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bastion.openapi import build_openapi
from bastion.pipeline.chain import Pipeline, Stage
from bastion.pipeline.context import RequestContext
from bastion.ports import Clock, Ledger, OrderRecord
from bastion.schema import (
    ROUTES,
    ErrorBody,
    ErrorDetail,
    HealthView,
    OrdersView,
    RouteSpec,
    account_view,
    markets_view,
    order_view,
    ticker_view,
)
from bastion.vault.subjects import SubjectKeys

log = structlog.get_logger("bastion.http")
_encode = msgspec.json.Encoder().encode


class SecurityHeaders:
    """Adds the security headers to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"server"]
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _in_networks(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks if ip.version == net.version)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(10)


def json_response(payload: object, status: int, request_id: str) -> Response:
    return Response(
        _encode(payload),
        status_code=status,
        media_type="application/json",
        headers={"x-request-id": request_id},
    )


def error_response(
    code: ErrorCode, request_id: str, reason: str | None = None, retry_after: int | None = None
) -> Response:
    body = ErrorBody(ErrorDetail(code.value, MESSAGES[code], request_id, reason))
    response = json_response(body, HTTP_STATUS[code], request_id)
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


def _present(route: RouteSpec, result: object, receipt: dict[str, object] | None = None) -> object:
    if isinstance(result, OrderRecord):
        return order_view(result, receipt)
    if route.name == "list_orders" and isinstance(result, list):
        return OrdersView([order_view(r) for r in result if isinstance(r, OrderRecord)])
    if route.name == "get_account" and isinstance(result, tuple):
        account, balances = result
        return account_view(account, [b for b in balances if isinstance(b, Balance)])
    if route.name == "list_markets" and isinstance(result, list | tuple):
        return markets_view([i for i in result if isinstance(i, Instrument)])
    if isinstance(result, Ticker):
        return ticker_view(result)
    if isinstance(result, msgspec.Struct):  # views built by the stage itself (the ledger's)
        return result
    raise TypeError(f"no presenter for {route.name} result {type(result).__name__}")


async def read_body(request: Request, cap: int, seconds: float) -> tuple[bytes, bool, bool]:
    """(body, too large, timed out): reading stops as soon as the body is known to exceed
    ``cap`` bytes or ``seconds`` have passed (a slow POST)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return b"", True, False
        if int(declared) > cap:
            return b"", True, False
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    return b"", True, False
                chunks.append(chunk)
    except TimeoutError:
        return b"", False, True
    return b"".join(chunks), False, False


def _headers(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


class EdgeRefusal:
    """Terminal stage for requests to undeclared routes or methods (after the shield)."""

    name: ClassVar[str] = "edge"

    async def __call__(self, ctx: RequestContext) -> Verdict:
        status = int(ctx.path_params.get("_status", "404"))
        code = ErrorCode.METHOD_NOT_ALLOWED if status == 405 else ErrorCode.NOT_FOUND
        return Deny(self.name, code, f"undeclared route or method (HTTP {status})")


UNDECLARED = RouteSpec("undeclared", "*", "*", KeyScope.READ, "an undeclared route or method", ErrorBody)


def create_app(
    *,
    pipeline: Pipeline,
    ledger: Ledger,
    clock: Clock,
    venue_name: str,
    max_body_bytes: int,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    shield: Stage | None = None,
    body_timeout: float = 10.0,
    trusted_proxies: Sequence[str] = (),
    health: Callable[[], tuple[str, dict[str, str]]] | None = None,
    personal: SubjectKeys | None = None,
    metrics: Callable[[], bytes] | None = None,
    metrics_networks: Sequence[str] = ("127.0.0.0/8", "::1/128"),
) -> ASGIApp:
    if max_body_bytes < 1024:
        raise ValueError("max_body_bytes must be at least 1024")
    if body_timeout <= 0:
        raise ValueError("body_timeout must be positive")
    openapi_bytes = _encode(build_openapi())
    trusted = parse_networks(trusted_proxies)
    scrapers = parse_networks(metrics_networks)
    edge_pipeline = Pipeline(
        (shield, EdgeRefusal()) if shield is not None else (EdgeRefusal(),), ledger, personal
    )

    async def context_of(request: Request, route: RouteSpec) -> RequestContext:
        body, too_large, timed_out = await read_body(request, max_body_bytes, body_timeout)
        client = request.scope.get("client") or ("", 0)
        headers = _headers(request)
        address, forwarded_scheme = client_of(str(client[0]), headers, trusted)
        return RequestContext(
            request_id=new_request_id(),
            route=route,
            method=request.method,
            scheme=forwarded_scheme or request.scope.get("scheme", "https"),
            authority=(headers.get("host") or [""])[0],
            path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            body_too_large=too_large,
            body_timed_out=timed_out,
            client_ip=address,
            path_params={k: str(v) for k, v in request.path_params.items()},
            received_at=clock.now(),
        )

    def endpoint(route: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            ctx = await context_of(request, route)
            request_id = ctx.request_id
            verdict: Verdict | None = None
            try:
                verdict = await pipeline.run(ctx)
                response = _respond(ctx, verdict)
            except Exception:
                log.exception("request_failed", request_id=request_id, route=route.name)
                response = error_response(ErrorCode.INTERNAL_ERROR, request_id)
            log.info(
                "request",
                request_id=request_id,
                route=route.name,
                status=response.status_code,
                code=verdict.code.value if isinstance(verdict, Deny) else None,
                stage=verdict.stage if isinstance(verdict, Deny) else None,
                key_id=ctx.principal.key_id if ctx.principal else None,
                client_ip=ctx.client_ip,
                ms=round((time.perf_counter() - started) * 1000, 3),
            )
            return response

        return handle

    def _respond(ctx: RequestContext, verdict: Verdict) -> Response:
        if isinstance(verdict, Allow):
            response = json_response(_present(ctx.route, ctx.result, ctx.receipt), ctx.status, ctx.request_id)
        elif isinstance(verdict, Deny):
            response = error_response(
                verdict.code, ctx.request_id, verdict.public_reason, verdict.retry_after
            )
        elif isinstance(verdict, Hold):
            response = error_response(ErrorCode.STEP_UP_REQUIRED, ctx.request_id, verdict.hold_id)
        else:
            response = error_response(ErrorCode.FORBIDDEN, ctx.request_id)
        if ctx.response_headers:
            response.headers.update(ctx.response_headers)
        if ctx.body_too_large or ctx.body_timed_out:
            # the rest of that body may still be arriving, byte by byte: do not wait for it
            response.headers["connection"] = "close"
        return response

    async def healthz(request: Request) -> Response:
        status, checks = health() if health is not None else ("ok", {})
        view = HealthView(status, venue_name, checks)
        return json_response(view, 200 if status == "ok" else 503, new_request_id())

    async def openapi(request: Request) -> Response:
        return Response(
            openapi_bytes, media_type="application/json", headers={"x-request-id": new_request_id()}
        )

    async def metrics_endpoint(request: Request) -> Response:
        client = request.scope.get("client") or ("", 0)
        address, _ = client_of(str(client[0]), _headers(request), trusted)
        if metrics is None or not _in_networks(address, scrapers):
            raise HTTPException(404)  # answered and recorded like any undeclared route
        return Response(
            metrics(), media_type=METRICS_CONTENT_TYPE, headers={"x-request-id": new_request_id()}
        )

    async def edge_refusal(request: Request, exc: Exception) -> Response:
        """An undeclared route or method: through the shield (floods of them are limited like
        any others), then refused and recorded."""
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        try:
            ctx = await context_of(request, UNDECLARED)
            ctx.path = ctx.path[:512]
            ctx.path_params = {"_status": str(status)}
            verdict = await edge_pipeline.run(ctx)
        except Exception:
            request_id = new_request_id()
            log.exception("ledger_failed", request_id=request_id)
            return error_response(ErrorCode.INTERNAL_ERROR, request_id)
        response = _respond(ctx, verdict)
        if status == 405 and response.status_code == 405:  # the methods the path has (RFC 9110 §15.5.6)
            allowed = {
                m for r in routes if r.matches(request.scope)[0] is not Match.NONE for m in (r.methods or ())
            }
            if allowed:
                response.headers["allow"] = ", ".join(sorted(allowed))
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        request_id = new_request_id()
        log.error("unhandled_error", request_id=request_id, error=type(exc).__name__)
        return error_response(ErrorCode.INTERNAL_ERROR, request_id)

    routes = [Route(r.path, endpoint(r), methods=[r.method], name=r.name) for r in ROUTES]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    for route in routes:
        # GET routes do not answer HEAD: only what is declared exists (405 otherwise)
        if route.methods is not None:
            route.methods.discard("HEAD")
    handlers: dict[Any, Any] = {HTTPException: edge_refusal, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    # "/v1/orders/" is not a route: a 404 like any other, never a redirect (whose Location
    # would come from the Host header)
    app.router.redirect_slashes = False
    return SecurityHeaders(app)
