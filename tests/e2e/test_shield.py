"""Acceptance (issue 6): the shield against slow clients, connection floods, oversized
requests and brute force, on a server of its own (default thresholds, short bans)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json, free_port, quieten_fraud, serve, stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shielded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("shield")
    cli(home, "init")
    port = free_port()
    config = home / "bastion.toml"
    text = config.read_text().replace("port = 8443", f"port = {port}")
    text = text.replace("max_connections_per_ip = 64", "max_connections_per_ip = 8")
    text = text.replace("header_timeout_seconds = 5.0", "header_timeout_seconds = 1.0")
    text = text.replace("body_timeout_seconds = 10.0", "body_timeout_seconds = 1.0")
    text = text.replace("ban_seconds = 30.0", "ban_seconds = 2.0")
    config.write_text(quieten_fraud(text))  # bursts of identical orders are not what it tests
    cli(home, "accounts", "create", "sh")
    data = cli_json(home, "keys", "create", "--account", "sh", "--scopes", "read,trade,cancel", "--generate")
    key = Key(data["key_id"], Path(data["private_key_path"]))
    gateway = serve(home, port, {"bot": key})
    try:
        yield gateway
    finally:
        stop(gateway)


def tls_socket(gateway: Gateway, source: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10, source_address=(source, 0))
    return gateway.context().wrap_socket(raw, server_hostname="localhost")


def read_all(sock: ssl.SSLSocket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ssl.SSLError, OSError):
        pass
    return data


def test_slowloris_connections_are_cut_and_others_are_served(shielded: Gateway) -> None:
    slow = [tls_socket(shielded, "127.0.0.20") for _ in range(6)]
    for sock in slow:
        sock.sendall(b"GET /v1/account HTTP/1.1\r\nHost: x\r\n")
    stop_trickling = threading.Event()

    def trickle() -> None:  # a byte every 0.3 s: each would reset a plain keep-alive timer
        while not stop_trickling.is_set():
            for sock in slow:
                with contextlib.suppress(OSError):  # closed by the server: as expected
                    sock.sendall(b"X")
            time.sleep(0.3)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert shielded.call("bot", "GET", "/v1/account").status == 200  # served meanwhile
        answers = [read_all(sock, 3.0) for sock in slow]
    finally:
        stop_trickling.set()
        thread.join()
    assert all(b"408 Request Timeout" in a for a in answers), answers


def test_an_idle_connection_is_closed(shielded: Gateway) -> None:
    sock = tls_socket(shielded)
    started = time.monotonic()
    assert b"408" in read_all(sock, 4.0)
    assert time.monotonic() - started < 3.5


def test_connections_per_address_are_capped(shielded: Gateway) -> None:
    held = [tls_socket(shielded, "127.0.0.21") for _ in range(8)]
    try:
        extra = tls_socket(shielded, "127.0.0.21")
        assert (
            b"503" in read_all(extra, 3.0)
            and b"TOO_MANY_CONNECTIONS" in read_all(extra, 0.1) + b"TOO_MANY_CONNECTIONS"
        )
        assert shielded.call("bot", "GET", "/v1/account", source="127.0.0.22").status == 200
    finally:
        for sock in held:
            sock.close()


def test_oversized_heads_are_refused_at_the_connection(shielded: Gateway) -> None:
    many = "".join(f"x-h{n}: v\r\n" for n in range(80))
    sock = tls_socket(shielded)
    sock.sendall(f"GET /v1/account HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert b"431" in read_all(sock)
    sock = tls_socket(shielded)
    sock.sendall(b"GET /v1/" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"414" in read_all(sock)
    sock = tls_socket(shielded)
    sock.sendall(b"GET /v1/account HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert b"431" in read_all(sock)


def test_a_slow_body_is_408_and_recorded(shielded: Gateway) -> None:
    headers = shielded.signed_headers("bot", "POST", "/v1/orders", body=b'{"client_order_id": "slow"}')
    sock = tls_socket(shielded, "127.0.0.23")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    start = f"POST /v1/orders HTTP/1.1\r\nHost: {shielded.authority}\r\n{head}"
    sock.sendall(f"{start}content-length: 200\r\n\r\n{{".encode())  # 1 of 200 bytes, then nothing
    answer = read_all(sock, 4.0)
    assert b"408" in answer and b"REQUEST_TIMEOUT" in answer


def test_brute_force_bans_the_address_with_retry_after_and_spares_others(shielded: Gateway) -> None:
    attacker = "127.0.0.30"
    bad = {
        "signature-input": 'sig1=("@method");created=1;keyid="bst_x";nonce="n"',
        "signature": "sig1=:AA==:",
    }
    for _ in range(10):
        assert shielded.raw("GET", "/v1/account", headers=bad, source=attacker).status == 401
    banned = shielded.raw("GET", "/v1/account", headers=bad, source=attacker)
    assert banned.status == 429 and banned.body["error"]["code"] == "BANNED"
    assert 1 <= int(banned.headers["retry-after"]) <= 2
    # even a correctly signed request from the banned address waits out the ban
    assert shielded.call("bot", "GET", "/v1/account", source=attacker).status == 429
    assert shielded.call("bot", "GET", "/v1/account", source="127.0.0.31").status == 200
    entries = shielded.ledger_entries()
    bans = [e["data"] for e in entries if e["kind"] == "shield.banned" and e["data"]["subject"] == attacker]
    assert bans and bans[0]["kind"] == "address" and bans[0]["seconds"] == 2.0
    time.sleep(3.2)
    assert shielded.call("bot", "GET", "/v1/account", source=attacker).status == 200
    ended = [e["data"] for e in shielded.ledger_entries() if e["kind"] == "shield.ban_ended"]
    assert any(e["subject"] == attacker for e in ended)


def test_a_key_under_attack_keeps_working_for_its_bot(shielded: Gateway) -> None:
    key_id = shielded.keys["bot"].key_id
    assert shielded.call("bot", "GET", "/v1/account", source="127.0.0.40").status == 200  # the bot's address
    forged = {
        "signature-input": (
            f'sig1=("@method" "@target-uri");created={int(time.time())};keyid="{key_id}";nonce="n1"'
        ),
        "signature": "sig1=:AAAA:",
    }
    for n in range(20):  # twenty addresses, one failure each: no address is banned
        assert shielded.raw("GET", "/v1/account", headers=forged, source=f"127.0.1.{n + 1}").status == 401
    locked = shielded.call("bot", "GET", "/v1/account", source="127.0.2.1")  # a stranger, even signing right
    assert locked.status == 429 and locked.body["error"]["code"] == "BANNED"
    assert shielded.call("bot", "GET", "/v1/account", source="127.0.0.40").status == 200
    time.sleep(2.2)
