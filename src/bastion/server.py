"""Running the gateway: the app wired from services, served by uvicorn over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from bastion import control
from bastion.config import Settings, ShieldSettings, is_loopback
from bastion.errors import ConfigError
from bastion.http.app import create_app
from bastion.http.protocol import shielded_protocol
from bastion.pipeline.chain import Stage
from bastion.services import Services
from bastion.tls import server_context


def services_lifespan(
    services: Services, on_close: Callable[[], Awaitable[None]] | None = None
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Start ``services`` with the server and close them (then ``on_close``) when it stops."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await services.start()
        await services.start_serving()
        control_server = await control.serve(services.home, services.control)
        try:
            yield
        finally:
            control_server.close()
            await services.close()
            if on_close is not None:
                await on_close()

    return lifespan


def build_app(services: Services, stages: tuple[Stage, ...] | None = None) -> ASGIApp:
    """The ASGI app.  ``stages`` defaults to the production chain; no setting reaches it."""
    lifespan = services_lifespan(services)
    pipeline = services.pipeline(stages)
    return create_app(
        pipeline=pipeline,
        ledger=services.ledger,
        clock=services.clock,
        venue_name=services.venue.name,
        max_body_bytes=services.settings.server.max_body_bytes,
        lifespan=lifespan,
        shield=services.shield,
        body_timeout=services.settings.shield.body_timeout_seconds,
        trusted_proxies=services.settings.shield.trusted_proxies,
        health=services.health,
        personal=services.personal,
        metrics=services.metrics.render,
        metrics_networks=services.settings.metrics.allowed_networks,
    )


def tls_paths(home: Path, settings: Settings) -> tuple[Path, Path]:
    return home / settings.server.tls_cert, home / settings.server.tls_key


def run(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    cert: Path | None,
    key: Path | None,
    shield: ShieldSettings,
    insecure_http: bool = False,
) -> None:
    """Serve until stopped.  HTTPS unless ``insecure_http``, which only loopback accepts."""
    if insecure_http and not is_loopback(host):
        raise ConfigError("plain HTTP is only allowed on a loopback address")
    if not insecure_http and (cert is None or key is None):
        raise ConfigError("a TLS certificate and key are required")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=shielded_protocol(shield),  # httptools, with the connection-level shield
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,  # then open connections are closed: a stop never hangs
        ssl_certfile=None if insecure_http else str(cert),
        ssl_keyfile=None if insecure_http else str(key),
    )
    config.load()
    if not insecure_http and cert is not None and key is not None:
        config.ssl = server_context(cert, key)  # replace uvicorn's defaults with Mozilla intermediate
    uvicorn.Server(config).run()
