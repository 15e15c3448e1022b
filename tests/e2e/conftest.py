"""A real Bastion: initialised and served by its own CLI, over TLS on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion.crypto.httpsig import sign_request
from bastion.crypto.keys import load_ed25519_private

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bastion {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def cli_json(home: Path, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(home, *args, "--json").stdout)
    return data


@dataclass
class Key:
    key_id: str
    private_key_path: Path | None = None
    secret: str | None = None  # HMAC keys


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes


@dataclass
class Gateway:
    home: Path
    port: int
    cert: Path
    keys: dict[str, Key]
    process: subprocess.Popen[bytes]
    responses: list[bytes] = field(default_factory=list)
    sent_signatures: list[str] = field(default_factory=list)
    # For each sent signature: was it HMAC (never evidence, never stored) or Ed25519?
    sent_hmac: list[bool] = field(default_factory=list)
    other_secrets: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def raw(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> Response:
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            self.port,
            context=self.context(),
            timeout=30,
            source_address=(source, 0) if source else None,
        )
        try:
            conn.request(method, target, body=body or None, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.responses.append(data)
        for name, value in response.getheaders():
            self.responses.append(f"{name}: {value}".encode())
        parsed = json.loads(data) if data.startswith((b"{", b"[")) else None
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, parsed, data)

    def signed_headers(
        self,
        who: str,
        method: str,
        path: str,
        query: str = "",
        body: bytes = b"",
        *,
        created: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        key = self.keys[who]
        private = load_ed25519_private(key.private_key_path.read_bytes()) if key.private_key_path else None
        headers = sign_request(
            private_key=private,
            hmac_secret=key.secret.encode() if key.secret else None,
            key_id=key.key_id,
            method=method,
            url_scheme="https",
            authority=self.authority,
            path=path,
            query=query,
            body=body,
            created=created if created is not None else int(time.time()),
            nonce=nonce,
        )
        self.sent_signatures.append(headers["signature"])
        self.sent_hmac.append(key.secret is not None)
        if body:
            headers["content-type"] = "application/json"
        return headers

    def call(
        self, who: str, method: str, path: str, body: Any = None, query: str = "", source: str | None = None
    ) -> Response:
        """A signed request; ``source`` picks the client address (any of 127.0.0.0/8)."""
        raw = json.dumps(body).encode() if body is not None else b""
        headers = self.signed_headers(who, method, path, query, raw)
        return self.raw(method, path + ("?" + query if query else ""), raw, headers, source=source)

    def ledger_entries(self) -> list[dict[str, Any]]:
        import sqlite3

        with sqlite3.connect(self.home / "bastion.db") as db:
            rows = db.execute("SELECT body FROM ledger_entries ORDER BY idx").fetchall()
        return [json.loads(r[0]) for r in rows]

    def opened_entry_for(self, request_id: str) -> dict[str, Any]:
        """The request's entry with its personal data opened (through `bastion ledger show`)."""
        for n, entry in reversed(list(enumerate(self.ledger_entries()))):
            if entry["kind"] == "request" and entry["data"].get("request_id") == request_id:
                data: dict[str, Any] = json.loads(cli(self.home, "ledger", "show", str(n)).stdout)["data"]
                return data
        raise AssertionError(f"no ledger entry for {request_id}")

    def entry_for(self, request_id: str) -> dict[str, Any]:
        for entry in reversed(self.ledger_entries()):
            if entry["kind"] == "request" and entry["data"].get("request_id") == request_id:
                data: dict[str, Any] = entry["data"]
                return data
        raise AssertionError(f"no ledger entry for {request_id}")


def serve(home: Path, port: int, keys: dict[str, Key], *, port_flag: bool = False) -> Gateway:
    """`bastion serve` on ``home``, ready; ``port_flag`` passes --port (two servers, one home)."""
    out = (home / f"serve-{port}.out").open("ab")
    command = [sys.executable, "-m", "bastion", "serve", "--home", str(home)]
    if port_flag:
        command += ["--port", str(port)]
    process = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    out.close()
    gateway = Gateway(home, port, home / "tls" / "cert.pem", keys, process)
    _wait_ready(gateway, time.monotonic() + 30)
    return gateway


def stop(gateway: Gateway) -> None:
    gateway.process.terminate()
    gateway.process.wait(timeout=15)


def raise_limits(text: str, to: int = 100_000) -> str:
    """Settings text with every request-rate limit raised: for tests that send a lot from one address."""
    for name in ("ip_requests", "key", "account", "ip"):
        text = re.sub(rf"^{name}_per_second = .*$", f"{name}_per_second = {to}.0", text, flags=re.M)
    for name in ("ip", "key", "account"):
        text = re.sub(rf"^{name}_burst = .*$", f"{name}_burst = {to}", text, flags=re.M)
    return text


def _configure(home: Path, port: int, *, quiet_fraud: bool = True) -> None:
    config = home / "bastion.toml"
    text = config.read_text()
    text = text.replace("port = 8443", f"port = {port}").replace("bar_seconds = 60", "bar_seconds = 1")
    # The suite fails authentication on purpose, over and over, from 127.0.0.1: bans are tested
    # on a server of their own (tests/e2e/test_shield.py) with the default thresholds.
    text = text.replace("ban_after_failures = 10 ", "ban_after_failures = 10000 ")
    text = text.replace("key_lockout_after_failures = 20 ", "key_lockout_after_failures = 10000 ")
    if quiet_fraud:
        text = quieten_fraud(text)
    text = text.replace("ip_requests_per_second = 100.0", "ip_requests_per_second = 1000.0")
    text = text.replace("key_per_second = 20.0", "key_per_second = 500.0").replace(
        "key_burst = 40", "key_burst = 1000"
    )
    text = text.replace("account_per_second = 50.0", "account_per_second = 500.0")
    text = text.replace("account_burst = 100", "account_burst = 1000")
    text = text.replace("ip_per_second = 50.0", "ip_per_second = 1000.0").replace(
        "ip_burst = 100", "ip_burst = 2000"
    )
    config.write_text(text)


def quieten_fraud(text: str) -> str:
    """The shared suite's keys are refused on purpose again and again (BOLA, bad bodies,
    limits) and trade like no bot would (bursts, cancels within a second, prices far off the
    market): the fraud stage's actions are tested on a server of their own
    (tests/e2e/test_fraud.py); here they only record.  Self-match prevention is not a matter
    of points and stays on."""
    text = re.sub(r"^probe_denials = 8 ", "probe_denials = 1000000 ", text, flags=re.M)
    text = re.sub(r"^probe_halt_denials = 20 ", "probe_halt_denials = 1000000 ", text, flags=re.M)
    for name, value in (("alert_at", 50), ("hold_at", 60), ("deny_at", 70), ("halt_at", 80)):
        text = re.sub(rf"^{name} = [0-9.]+ ", f"{name} = {value}.0 ", text, flags=re.M)
    return text


def _wait_ready(gateway: Gateway, deadline: float) -> None:
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"bastion serve exited with {gateway.process.returncode}")
        try:
            if gateway.raw("GET", "/healthz").status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("bastion serve did not become ready")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("bastion-home")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    cli(home, "accounts", "create", "alice")
    cli(home, "accounts", "create", "bob")
    keys = {}
    for name, account, scopes in (
        ("alice", "alice", "read,trade,cancel"),
        ("alice_read", "alice", "read"),
        ("alice_trade", "alice", "read,trade"),
        ("bob", "bob", "read,trade,cancel"),
        ("revoked", "alice", "read,trade,cancel"),
    ):
        data = cli_json(home, "keys", "create", "--account", account, "--scopes", scopes, "--generate")
        keys[name] = Key(data["key_id"], Path(data["private_key_path"]))
    hmac = cli_json(
        home, "keys", "create", "--account", "alice", "--scopes", "read,trade,cancel", "--alg", "hmac"
    )
    keys["alice_hmac"] = Key(hmac["key_id"], secret=hmac["secret"])
    venue_key, venue_secret = f"pk-{secrets.token_hex(12)}", f"ps-{secrets.token_hex(24)}"
    added = subprocess.run(
        [sys.executable, "-m", "bastion", "venues", "add", "--account", "alice", "--home", str(home)],
        input=json.dumps({"api_key": venue_key, "api_secret": venue_secret}).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    log = (home / "serve.out").open("wb")
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--home", str(home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    gateway = Gateway(home, port, home / "tls" / "cert.pem", keys, process)
    gateway.other_secrets = {"venue api key": venue_key.encode(), "venue api secret": venue_secret.encode()}
    try:
        _wait_ready(gateway, time.monotonic() + 30)
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
