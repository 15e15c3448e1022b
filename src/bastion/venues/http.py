"""HTTP to a venue: one-method transport, its aiohttp implementation, an in-memory fake,
and the circuit breaker every venue adapter puts in front of it.

A venue is a party Bastion trusts to trade, never to speak correctly (OWASP API10, unsafe
consumption of APIs).  What reaches an adapter through :class:`AiohttpTransport` is already
bounded:

- the whole exchange, connect to last byte, ends within ``timeout`` seconds;
- the body is read up to ``max_response_bytes``; a longer one (or a compressed one, which is
  never asked for and never decompressed) fails the call and drops the connection;
- redirects are never followed: a 3xx is an answer, and the adapter refuses it;
- every address connected to is checked by the SSRF policy of ``alerts/ssrf.py`` (metadata
  addresses always refused, private ones only when the operator allows that network);
- TLS is verified (against ``ca_file`` when given, the system store otherwise).

Everything that goes wrong below the adapter is a :class:`~bastion.errors.VenueError` with a
short reason of Bastion's own: venue text never reaches the caller or the ledger.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from bastion.alerts.ssrf import CheckedResolver, TargetPolicy, is_ip
from bastion.config import VenueSettings
from bastion.errors import AlertError, ConfigError, TargetRefused, VenueError
from bastion.ports import Clock

_HEADER_LIMIT = 8190  # bytes in one header line or field of a venue's answer


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # absolute path, no query
    query: str = ""  # already encoded (and signed, for a signed call)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    content_type: str
    body: bytes
    retry_after: str | None = None


class Transport(Protocol):
    async def send(self, request: HttpRequest) -> HttpAnswer:
        """One request, one bounded answer; :class:`VenueError` when there is none."""
        ...

    async def close(self) -> None:
        """Release connections (the transport may be used again afterwards)."""
        ...


class MemoryTransport:
    """The in-memory fake: ``handler`` plays the venue (tests and the adapter's unit tests)."""

    def __init__(self, handler: Callable[[HttpRequest], Awaitable[HttpAnswer]]) -> None:
        self.handler = handler
        self.sent: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpAnswer:
        self.sent.append(request)
        return await self.handler(request)

    async def close(self) -> None:
        return None


class AiohttpTransport:
    """Keep-alive HTTPS to one venue base URL, bounded as the module docstring says."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_response_bytes: int,
        policy: TargetPolicy,
        allow_private: bool,
        ca_file: str = "",
        user_agent: str = "bastion",
    ) -> None:
        if not 0 < timeout <= 120:
            raise ConfigError("venue timeout must be in (0, 120] seconds")
        if not 1024 <= max_response_bytes <= 64 * 1024 * 1024:
            raise ConfigError("venue max_response_bytes must be 1 KiB..64 MiB")
        url = policy.parse_url(base_url, allow_private=allow_private)
        if url.scheme.lower() != "https":
            raise ConfigError("a venue base URL must be https://")
        if url.path not in ("", "/") or url.query_string or url.fragment:
            raise ConfigError("a venue base URL is scheme://host[:port] only, without a path or query")
        self._base = url.with_path("/")
        self._timeout = timeout
        self._max = max_response_bytes
        self._policy = policy
        self._allow_private = allow_private
        self._context = ssl.create_default_context(cafile=ca_file or None)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self._policy, allow_private=self._allow_private),
                ssl=self._context,
                limit=32,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                max_line_size=_HEADER_LIMIT,
                max_field_size=_HEADER_LIMIT,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    async def send(self, request: HttpRequest) -> HttpAnswer:
        host = self._base.host or ""
        try:
            if is_ip(host):  # aiohttp asks no resolver for an IP literal: check it here
                self._policy.check_address(host, allow_private=self._allow_private)
            url = URL.build(
                scheme=self._base.scheme,
                host=host,
                port=self._base.explicit_port,
                path=request.path,
                query_string=request.query,
                encoded=True,
            )
            session = self._get_session()
            async with session.request(
                request.method, url, headers=dict(request.headers), allow_redirects=False
            ) as response:
                if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                    raise VenueError("VENUE_ANSWER_ENCODED")
                length = response.content_length
                if length is not None and length > self._max:
                    raise VenueError("VENUE_ANSWER_TOO_LARGE")
                body = await _read_bounded(response, self._max)
                return HttpAnswer(
                    status=response.status,
                    content_type=response.headers.get("Content-Type", ""),
                    body=body,
                    retry_after=response.headers.get("Retry-After"),
                )
        except VenueError:
            raise
        except TimeoutError:
            raise VenueError("VENUE_TIMEOUT") from None
        except AlertError:  # the SSRF policy refused the address (or it does not resolve)
            raise VenueError("VENUE_ADDRESS_REFUSED") from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError):
            raise VenueError("VENUE_TLS_FAILED") from None
        except aiohttp.ClientConnectorError:
            raise VenueError("VENUE_UNREACHABLE") from None
        except (aiohttp.ClientError, OSError, ValueError):
            raise VenueError("VENUE_PROTOCOL_ERROR") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def transport_for(settings: VenueSettings) -> AiohttpTransport:
    """The transport ``[venue]`` describes; a refused URL or network is a :class:`ConfigError`."""
    try:
        return AiohttpTransport(
            settings.base_url,
            timeout=settings.timeout_seconds,
            max_response_bytes=settings.max_response_bytes,
            policy=TargetPolicy(settings.allowed_networks),
            allow_private=settings.allow_private_network,
            ca_file=settings.ca_file,
        )
    except TargetRefused as exc:
        raise ConfigError(f"venue.base_url: {exc}") from None


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.read(65_536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            response.close()
            raise VenueError("VENUE_ANSWER_TOO_LARGE")
        chunks.append(chunk)


class CircuitBreaker:
    """Stop calling a venue that keeps failing.

    ``failures`` failures in a row open the circuit for ``cooldown`` seconds: calls are refused
    at once (:class:`VenueError` ``CIRCUIT_OPEN``) instead of each waiting out a timeout.  After
    the cooldown one call goes through (half-open); its success closes the circuit, its failure
    opens it again.  A venue's ``Retry-After`` (rate limited) opens it for that long.  Time is
    the caller's clock."""

    def __init__(self, clock: Clock, *, failures: int, cooldown: float) -> None:
        if not 1 <= failures <= 1000 or not 0 < cooldown <= 3600:
            raise ConfigError("breaker failures must be 1..1000 and cooldown (0, 3600] seconds")
        self._clock = clock
        self._threshold = failures
        self._cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0
        self._trial = False

    def _now(self) -> float:
        return self._clock.now().timestamp()

    @property
    def is_open(self) -> bool:
        return self._now() < self._open_until

    def before(self) -> None:
        """Raise ``CIRCUIT_OPEN`` unless a call may go out now."""
        now = self._now()
        if now < self._open_until:
            raise VenueError("CIRCUIT_OPEN")
        if self._failures >= self._threshold:
            if self._trial:
                raise VenueError("CIRCUIT_OPEN")  # one trial call at a time while half-open
            self._trial = True

    def succeeded(self) -> None:
        self._failures = 0
        self._trial = False

    def abandoned(self) -> None:
        """The caller gave up (its own deadline): no verdict on the venue."""
        self._trial = False

    def failed(self, *, retry_after: float | None = None) -> None:
        self._trial = False
        self._failures += 1
        now = self._now()
        if retry_after is not None:
            self._open_until = max(self._open_until, now + min(max(retry_after, 0.0), 3600.0))
        if self._failures >= self._threshold:
            self._open_until = max(self._open_until, now + self._cooldown)


async def call_through(breaker: CircuitBreaker, transport: Transport, request: HttpRequest) -> HttpAnswer:
    """``transport.send`` behind ``breaker``; transport failures and 5xx count against it."""
    breaker.before()
    try:
        answer = await transport.send(request)
    except (TimeoutError, VenueError):
        breaker.failed()
        raise
    except asyncio.CancelledError:
        breaker.abandoned()
        raise
    if answer.status >= 500:
        breaker.failed()
    elif answer.status in (418, 429):
        breaker.failed(retry_after=_seconds(answer.retry_after))
    else:
        breaker.succeeded()
    return answer


def _seconds(value: str | None) -> float | None:
    # ASCII digits only: str.isdigit() is also true of "²", which float() refuses.
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 6:
        return None
    return float(value)
