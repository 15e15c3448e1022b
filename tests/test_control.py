"""The control socket: private, one JSON object per line each way, errors as answers."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from bastion import control
from bastion.errors import ConfigError


async def _echo(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("op") == "fail":
        raise ConfigError("refused on purpose")
    return {"echo": request}


async def test_a_request_gets_its_answer_and_the_socket_is_private(tmp_path: Path) -> None:
    server = await control.serve(tmp_path, _echo)
    try:
        path = control.socket_path(tmp_path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        reply = await asyncio.to_thread(control.call, tmp_path, {"op": "ping"})
        assert reply == {"ok": True, "echo": {"op": "ping"}}
        with pytest.raises(control.ControlError, match="refused on purpose"):
            await asyncio.to_thread(control.call, tmp_path, {"op": "fail"})
    finally:
        server.close()
        await server.wait_closed()


async def test_garbage_is_refused_not_crashed_on(tmp_path: Path) -> None:
    server = await control.serve(tmp_path, _echo)
    try:

        def send_raw(data: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(control.socket_path(tmp_path)))
                sock.sendall(data)
                return sock.recv(65_536)

        for raw in (b"not json\n", b"[1, 2]\n", b"\xff\xfe\n"):
            answer = await asyncio.to_thread(send_raw, raw)
            assert b'"ok": false' in answer
        reply = await asyncio.to_thread(control.call, tmp_path, {"op": "ping"})
        assert reply is not None and reply["ok"]  # still serving
    finally:
        server.close()
        await server.wait_closed()


def test_no_server_means_none(tmp_path: Path) -> None:
    assert control.call(tmp_path, {"op": "ping"}) is None
    path = control.socket_path(tmp_path)
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:  # a socket file nobody listens on
        stale.bind(str(path))
    assert control.call(tmp_path, {"op": "ping"}) is None


def test_the_peer_is_identified_by_its_uid() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert control._peer_uid(left) == os.getuid()


def test_a_home_too_deep_for_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too long"):
        control.socket_path(tmp_path / ("d" * 120))
