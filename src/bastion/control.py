"""The control socket: how operator commands reach a running server at once.

``bastion serve`` listens on a Unix socket at ``<home>/run/control.sock`` (the folder 0700,
the socket 0600) and accepts connections only from its own user (``SO_PEERCRED``): whoever
may use it already owns the home, its database and its master keyfile, so the socket adds
no authority, only immediacy.  The kill switch and policy changes use it so the next request
sees them; without a running server the CLI does the same work itself.

The protocol is one JSON object per line each way: a request ``{"op": ...}`` and a reply
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, ConfigError

SOCKET_PATH = Path("run") / "control.sock"
MAX_LINE = 65_536
_MAX_PATH = 100  # sun_path holds 108 bytes on Linux

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(BastionError):
    """The running server refused or failed a control request."""


def socket_path(home: Path) -> Path:
    path = (home / SOCKET_PATH).resolve()
    if len(os.fsencode(path)) > _MAX_PATH:
        raise ConfigError(f"the home's path is too long for its control socket ({path}); use a shorter one")
    return path


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def serve(home: Path, handler: Handler) -> asyncio.AbstractServer:
    path = socket_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a server that died
    own_uid = os.getuid()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or _peer_uid(sock) not in (own_uid, 0):
                return
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            try:
                request = json.loads(line) if len(line) <= MAX_LINE else None
            except ValueError:  # not JSON, or not UTF-8
                request = None
            if not isinstance(request, dict):
                reply: dict[str, Any] = {"ok": False, "error": "a request is one JSON object on one line"}
            else:
                try:
                    reply = {"ok": True} | await handler(request)
                except BastionError as exc:
                    reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_connection, path=str(path), limit=MAX_LINE + 1)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


def call(home: Path, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any] | None:
    """Send one request to the server running on ``home``; None when no server listens there.
    Raises :class:`ControlError` when the server answers with an error."""
    path = socket_path(home)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65_536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError("the running server gave no answer") from None
    if not isinstance(reply, dict):
        raise ControlError("the running server gave no answer")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply
