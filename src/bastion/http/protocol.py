"""The connection-level part of the shield: uvicorn's httptools protocol with limits.

uvicorn times out only idle keep-alive connections, and any byte received resets that; a
slowloris client trickling a header forever, or one that connects and sends nothing, holds
its connection open.  This protocol adds, per connection:

- a **header deadline**: a request's headers (or, on a new connection, its first request's)
  must be complete ``header_timeout`` seconds after the connection opened or the request's
  first byte arrived; bytes trickling in do not extend it;
- **header and URL limits**: more than ``max_header_count`` headers, more than
  ``max_header_bytes`` of them, or a URL longer than ``max_url_bytes`` is answered
  ``431`` / ``414`` and the connection closed;
- **connections per address**: beyond ``max_connections_per_ip`` open connections from one
  client address, a new one is answered ``503`` and closed at once.

What it refuses never reaches the application (and so the ledger): these are floods, not
decisions about a request.  They are counted in :data:`REFUSED`.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.config import ShieldSettings
from bastion.http.headers import SECURITY_HEADERS

REFUSED: Counter[str] = Counter()


def _response(status: bytes, reason: bytes) -> bytes:
    body = b'{"error":{"code":"' + reason + b'","message":"Refused at the connection."}}'
    security = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + security
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


_TOO_MANY = _response(b"503 Service Unavailable", b"TOO_MANY_CONNECTIONS")
_HEADERS_TOO_LARGE = _response(b"431 Request Header Fields Too Large", b"HEADERS_TOO_LARGE")
_URL_TOO_LONG = _response(b"414 URI Too Long", b"URL_TOO_LONG")
_TIMEOUT = _response(b"408 Request Timeout", b"REQUEST_TIMEOUT")
_MALFORMED = _response(b"400 Bad Request", b"BAD_REQUEST")


def shielded_protocol(settings: ShieldSettings) -> type[HttpToolsProtocol]:
    """A protocol class bound to ``settings`` (uvicorn's ``http=`` takes a class)."""
    open_per_address: Counter[str] = Counter()

    class ShieldedProtocol(HttpToolsProtocol):
        _address: str | None = None
        _deadline: asyncio.TimerHandle | None = None
        _header_count = 0
        _header_bytes = 0
        _url_bytes = 0
        _refused = False

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to bytes that are not HTTP, in Bastion's shape and headers."""
            REFUSED["malformed_request"] += 1
            if not self.transport.is_closing():
                self.transport.write(_MALFORMED)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if open_per_address[address] >= settings.max_connections_per_ip:
                self._refuse(_TOO_MANY, "connections_per_address")
                return
            open_per_address[address] += 1
            self._address = address
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._address is not None:
                open_per_address[self._address] -= 1
                if open_per_address[self._address] <= 0:
                    del open_per_address[self._address]
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(settings.header_timeout_seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            self._refuse(_TIMEOUT, "header_timeout")

        def _refuse(self, answer: bytes, why: str) -> None:
            if self._refused:
                return
            REFUSED[why] += 1
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        # -- parser callbacks ------------------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_count = self._header_bytes = self._url_bytes = 0
            if self._deadline is None:
                self._arm()  # the next request on a kept-alive connection

        def on_url(self, url: bytes) -> None:
            if self._refused:
                return
            self._url_bytes += len(url)
            if self._url_bytes > settings.max_url_bytes:
                self._refuse(_URL_TOO_LONG, "url_too_long")
                return
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refused:
                return
            self._header_count += 1
            self._header_bytes += len(name) + len(value)
            if (
                self._header_count > settings.max_header_count
                or self._header_bytes > settings.max_header_bytes
            ):
                self._refuse(_HEADERS_TOO_LARGE, "headers_too_large")
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._disarm()
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

    return ShieldedProtocol
