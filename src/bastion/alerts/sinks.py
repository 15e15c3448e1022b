"""Where alerts go: the structured log, a signed JSON webhook, a Slack incoming webhook, e-mail.

Every sink has a ``kind``, a display ``name`` that is safe to log (no URL path or query, where
webhook tokens live) and ``async send(alert)``, which raises :class:`AlertError` with
``retryable`` set: 5xx, 408, 429, timeouts and connection failures may succeed later; other
4xx answers, redirects and refused targets will not.

HTTP sinks validate their URL with :meth:`TargetPolicy.check_url` when built (a bad target
fails at start-up), connect only through :class:`CheckedResolver` (IP-literal hosts are checked
again before each request, since aiohttp does not resolve them), never follow redirects, ignore
proxy settings from the environment, keep no cookies and read at most 64 KiB of an answer.

Webhook bodies are signed: ``Bastion-Alert-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>." + body>``; receivers check it with :func:`verify_webhook_signature`.

The SMTP sink resolves and checks its server with the policy, then connects to the checked
address itself (the name is used only for the TLS certificate check), with STARTTLS when the
server offers it (``auto``), never, or as a requirement (``require``).  Note that ``auto``
cannot tell a server without STARTTLS from an attacker who strips it; use ``require`` where
the server is known to offer it.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import hashlib
import hmac
import json
import math
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC
from email.message import EmailMessage
from typing import Any, Literal, Protocol

import aiohttp
from yarl import URL

from bastion.alerts.alert import Alert, clean_line
from bastion.alerts.ssrf import CheckedResolver, TargetPolicy, check_host_syntax, is_ip
from bastion.errors import AlertError, ConfigError
from bastion.ports import Clock

SIGNATURE_HEADER = "Bastion-Alert-Signature"
USER_AGENT = "bastion-alerts"
MAX_RESPONSE_BYTES = 64 * 1024
MAX_SUBJECT = 200
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAX_SIGNATURE_HEADER = 1024


class Sink(Protocol):
    """An alert destination.  ``name`` is for logs and metrics and never holds a secret."""

    kind: str
    name: str

    async def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise :class:`AlertError` (``retryable`` says if trying again may help)."""
        ...


class _Logger(Protocol):
    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


def compact_json(value: Mapping[str, object]) -> bytes:
    """The bytes sent and signed: compact, sorted keys, ASCII."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("ascii")


# --- signatures -----------------------------------------------------------------------------


def sign_webhook(secret: bytes, body: bytes, timestamp: int) -> str:
    """The value of the signature header for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook_signature(
    secret: bytes, header: str, body: bytes, *, now: float, tolerance: float = 300
) -> bool:
    """True when ``header`` is a valid signature of ``body`` under ``secret``, made within
    ``tolerance`` seconds of ``now`` (either way).  Any ``v1`` value may match (several are
    allowed so a receiver can accept an old and a new secret during rotation); the comparison
    is constant-time.  Malformed headers are False, never an exception."""
    if not secret or len(header) > _MAX_SIGNATURE_HEADER:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if not math.isfinite(now) or abs(now - timestamp) > tolerance:
        return False
    expected = sign_webhook(secret, body, timestamp).rpartition("v1=")[2].encode("ascii")
    matched = False
    for candidate in candidates:
        if _HEX_DIGEST.fullmatch(candidate):
            matched |= hmac.compare_digest(expected, candidate.encode("ascii"))
    return matched


# --- the log --------------------------------------------------------------------------------


class LogSink:
    """Alerts as ``alert`` warnings in the structured log (always safe, never fails)."""

    kind = "log"

    def __init__(self, logger: _Logger) -> None:
        self._logger = logger
        self.name = "log"

    async def send(self, alert: Alert) -> None:
        self._logger.warning("alert", **alert.to_json())


# --- HTTP -----------------------------------------------------------------------------------


def _origin(url: URL) -> str:
    """scheme://host[:port] of ``url``; never its path, query or user information."""
    host = url.host or ""
    if ":" in host:
        host = f"[{host}]"
    port = url.explicit_port
    return f"{url.scheme}://{host}" + (f":{port}" if port is not None else "")


def _check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError("a sink's timeout must be a positive number of seconds")
    return float(timeout)


class _HttpSink:
    """POSTs to one URL through a checked connector; one session per sink, made lazily."""

    kind = "http"
    name = "http"

    def __init__(
        self, url: str, policy: TargetPolicy, *, allow_private: bool, timeout: float, clock: Clock
    ) -> None:
        self._timeout = _check_timeout(timeout)
        self._url = policy.parse_url(url, allow_private=allow_private)
        self._policy = policy
        self._allow_private = allow_private
        self._plain = self._url.scheme.lower() == "http"
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            self._session = None  # made in a loop that is gone (e.g. a second asyncio.run)
        if self._session is None or self._session.closed:
            self._loop = loop
            resolver = CheckedResolver(
                self._policy, allow_private=self._allow_private, only_allowed=self._plain
            )
            connector = aiohttp.TCPConnector(resolver=resolver, limit=8)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    async def _post(self, body: bytes, headers: Mapping[str, str]) -> None:
        host = self._url.host or ""
        if is_ip(host):  # aiohttp connects to IP literals without asking the resolver
            self._policy.check_address(host, allow_private=self._allow_private, only_allowed=self._plain)
        session = self._get_session()
        try:
            async with session.post(
                self._url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                status = response.status
                await _read_bounded(response)
        except AlertError:
            raise
        except TimeoutError:
            raise AlertError(f"{self.name}: no answer within {self._timeout:g} s", retryable=True) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError):
            raise AlertError(f"{self.name}: the TLS handshake or certificate check failed") from None
        except aiohttp.ClientConnectorError as exc:
            raise AlertError(
                f"{self.name}: cannot connect ({exc.strerror or 'refused'})", retryable=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AlertError(f"{self.name}: {type(exc).__name__}", retryable=True) from None
        _check_status(self.name, status)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


async def _read_bounded(response: aiohttp.ClientResponse) -> None:
    """Read (and drop) at most 64 KiB of the answer; a longer one loses its connection."""
    remaining = MAX_RESPONSE_BYTES
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            return
        remaining -= len(chunk)
    response.close()


def _check_status(name: str, status: int) -> None:
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise AlertError(f"{name}: answered HTTP {status}; redirects are not followed", retryable=False)
    retryable = status in (408, 429) or status >= 500
    raise AlertError(f"{name}: answered HTTP {status}", retryable=retryable)


class WebhookSink(_HttpSink):
    """POSTs ``alert.to_json()`` (compact, sorted keys) signed with ``secret``."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        policy: TargetPolicy,
        *,
        allow_private: bool,
        timeout: float = 5.0,
        clock: Clock,
    ) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ConfigError("a webhook sink needs a non-empty secret")
        super().__init__(url, policy, allow_private=allow_private, timeout=timeout, clock=clock)
        self._secret = secret
        has_more = self._url.raw_path not in ("", "/") or bool(self._url.raw_query_string)
        self.name = f"webhook {_origin(self._url)}" + ("/…" if has_more else "")

    def __repr__(self) -> str:
        return f"WebhookSink({self.name!r})"

    async def send(self, alert: Alert) -> None:
        body = compact_json(alert.to_json())
        timestamp = math.floor(self._clock.now().timestamp())
        await self._post(
            body,
            {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_webhook(self._secret, body, timestamp),
                "User-Agent": USER_AGENT,
            },
        )


def slack_escape(text: str) -> str:
    """Slack's control characters escaped, so untrusted text cannot mention ``<!channel>`` or
    make links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackSink(_HttpSink):
    """POSTs ``{"text": alert.summary()}`` to a Slack incoming webhook.  Its name shows only the
    host: the path of a Slack webhook URL is its token."""

    kind = "slack"

    def __init__(
        self,
        url: str,
        policy: TargetPolicy,
        *,
        allow_private: bool,
        timeout: float = 5.0,
        clock: Clock,
    ) -> None:
        super().__init__(url, policy, allow_private=allow_private, timeout=timeout, clock=clock)
        self.name = f"slack {self._url.host}"

    def __repr__(self) -> str:
        return f"SlackSink({self.name!r})"

    async def send(self, alert: Alert) -> None:
        body = compact_json({"text": slack_escape(alert.summary())})
        await self._post(body, {"Content-Type": "application/json", "User-Agent": USER_AGENT})


# --- e-mail ---------------------------------------------------------------------------------

_ADDRESS_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>,;:\"()\[\]\\]")


def _check_mailbox(value: str, what: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > 254
        or value.count("@") != 1
        or _ADDRESS_FORBIDDEN.search(value)
        or not value.isprintable()
    ):
        raise ConfigError(f"the e-mail sink's {what} address is not a plain address like ops@example.com")
    local, _, domain = value.partition("@")
    if not local or not domain or domain.startswith(".") or domain.endswith(".") or "." not in domain:
        raise ConfigError(f"the e-mail sink's {what} address is not a plain address like ops@example.com")
    return value


def _address_literal(address: str) -> str:
    """An EHLO argument for our own address: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    bare = address.split("%", 1)[0]
    return f"[IPv6:{bare}]" if ":" in bare else f"[{bare}]"


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP that talks to ``host`` (its name is used for the TLS check) but connects to
    the already checked ``address``."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        self._pinned = address
        # An explicit local name, so smtplib does not look up our own FQDN.
        super().__init__(host, port, local_hostname="localhost", timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._pinned, port), timeout, self.source_address)


class SmtpSink:
    """Sends each alert as an e-mail: Subject ``alert.summary()`` on one line (at most 200
    characters), body the pretty JSON of ``alert.to_json()``.  ``tls_context`` overrides the
    default verifying context (e.g. for a private CA)."""

    kind = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        to: str,
        sender: str,
        policy: TargetPolicy,
        *,
        allow_private: bool,
        timeout: float = 10,
        starttls: Literal["auto", "never", "require"] = "auto",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        check_host_syntax(host)
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if is_ip(bare):
            policy.check_address(bare, allow_private=allow_private)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("the e-mail sink's port must be between 1 and 65535")
        if starttls not in ("auto", "never", "require"):
            raise ConfigError("starttls must be 'auto', 'never' or 'require'")
        self._host = bare
        self._port = port
        self._to = _check_mailbox(to, "recipient")
        self._sender = _check_mailbox(sender, "sender")
        self._policy = policy
        self._allow_private = allow_private
        self._timeout = _check_timeout(timeout)
        self._starttls = starttls
        self._tls_context = tls_context
        shown = f"[{bare}]" if ":" in bare else bare
        self.name = f"smtp {shown}:{port} to {self._to}"

    def __repr__(self) -> str:
        return f"SmtpSink({self.name!r})"

    def message(self, alert: Alert) -> EmailMessage:
        """The e-mail for ``alert`` (public for tests and previews)."""
        message = EmailMessage(policy=email.policy.SMTP)
        message["Subject"] = clean_line(alert.summary())[:MAX_SUBJECT]
        message["From"] = self._sender
        message["To"] = self._to
        message["Date"] = email.utils.format_datetime(alert.time.astimezone(UTC))
        message["Message-ID"] = email.utils.make_msgid(domain=self._sender.partition("@")[2])
        message.set_content(json.dumps(alert.to_json(), indent=2, sort_keys=True) + "\n")
        return message

    async def send(self, alert: Alert) -> None:
        addresses = await self._policy.resolve(self._host, self._port, allow_private=self._allow_private)
        message = self.message(alert)
        await asyncio.to_thread(self._deliver, addresses, message)

    async def close(self) -> None:
        return None

    def _deliver(self, addresses: list[str], message: EmailMessage) -> None:
        """In a worker thread: try each checked address until one connects, then send."""
        last: OSError | None = None
        for address in addresses:
            try:
                client = _PinnedSMTP(self._host, self._port, address=address, timeout=self._timeout)
            except smtplib.SMTPException as exc:  # connected, but the greeting was not 220
                raise self._error(exc) from None
            except OSError as exc:  # refused, unreachable, timed out: try the next address
                last = exc
                continue
            try:
                with client:
                    self._session(client, message)
            except AlertError:
                raise
            except Exception as exc:
                raise self._error(exc) from None
            return
        detail = f" ({last.strerror or type(last).__name__})" if last is not None else ""
        raise AlertError(f"{self.name}: cannot connect{detail}", retryable=True)

    def _session(self, client: _PinnedSMTP, message: EmailMessage) -> None:
        if client.sock is not None:
            client.local_hostname = _address_literal(str(client.sock.getsockname()[0]))
        client.ehlo()
        if self._starttls != "never":
            if client.has_extn("starttls"):
                client.starttls(context=self._tls_context or ssl.create_default_context())
                client.ehlo()
            elif self._starttls == "require":
                raise AlertError(f"{self.name}: the server does not offer STARTTLS, which is required")
        client.send_message(message, from_addr=self._sender, to_addrs=[self._to])

    def _error(self, exc: Exception) -> AlertError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return AlertError(f"{self.name}: the server's TLS certificate did not verify")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _msg in exc.recipients.values()]
            return AlertError(
                f"{self.name}: the recipient was refused ({', '.join(map(str, codes))})",
                retryable=bool(codes) and all(400 <= c < 500 for c in codes),
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
            text = clean_line(text)[:120]
            return AlertError(
                f"{self.name}: the server answered {exc.smtp_code} {text}".rstrip(),
                retryable=400 <= exc.smtp_code < 500,
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return AlertError(f"{self.name}: the server closed the connection", retryable=True)
        if isinstance(exc, ssl.SSLError):
            return AlertError(f"{self.name}: the TLS handshake failed")
        if isinstance(exc, smtplib.SMTPException):
            return AlertError(f"{self.name}: {type(exc).__name__}")
        if isinstance(exc, OSError):
            return AlertError(f"{self.name}: {exc.strerror or type(exc).__name__}", retryable=True)
        return AlertError(f"{self.name}: {type(exc).__name__}")
