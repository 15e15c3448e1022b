"""Acceptance (issue 7): `kill -9` during a load of orders; after a restart every order that
was acknowledged is in the ledger (and its receipt still verifies), and the ledger verifies."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bastion.client import BastionAPIError, BastionClient
from tests.e2e.conftest import Key, cli, cli_json, quieten_fraud, raise_limits, serve, stop
from tests.e2e.test_ledger_cli import verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_acknowledged_orders_survive_kill_9(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.e2e.conftest import free_port

    home = tmp_path_factory.mktemp("crash")
    cli(home, "init")
    port = free_port()
    config = home / "bastion.toml"
    text = config.read_text().replace("port = 8443", f"port = {port}")
    text = raise_limits(text, 10_000)  # the check afterwards reads every order back, quickly
    config.write_text(quieten_fraud(text))  # bursts of identical orders are not what it tests
    cli(home, "accounts", "create", "crash")
    data = cli_json(
        home, "keys", "create", "--account", "crash", "--scopes", "read,trade,cancel", "--generate"
    )
    key = Key(data["key_id"], Path(data["private_key_path"]))
    gateway = serve(home, port, {"bot": key})
    acknowledged: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop_sending = threading.Event()

    def send(worker: int) -> None:
        with BastionClient(
            gateway.url, key.key_id, key.private_key_path, ca_cert=gateway.cert, timeout=5
        ) as bot:
            n = 0
            while not stop_sending.is_set():
                try:
                    order = bot.place_order(
                        f"w{worker}-{n}", "GOOG", "buy" if n % 2 else "sell", "market", "1"
                    )
                except (BastionAPIError, OSError):
                    return  # the server is gone
                with lock:
                    acknowledged.append(order)
                n += 1

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(send, w) for w in range(6)]
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(gateway.process.pid, signal.SIGKILL)  # mid-load, no shutdown of any kind
        gateway.process.wait(timeout=10)
        stop_sending.set()
        for future in futures:
            future.result(timeout=30)
    assert len(acknowledged) >= 60

    gateway = serve(home, port, {"bot": key})
    try:
        public = cli(home, "ledger", "public-key").stdout.encode()
        with BastionClient(gateway.url, key.key_id, key.private_key_path, ca_cert=gateway.cert) as bot:
            for order in acknowledged:
                assert bot.get_order(order["id"])["id"] == order["id"]
                entry = bot.verify_receipt(order, public)  # its entry is there, under a signed head
                assert entry["data"]["outcome"]["order_id"] == order["id"]
    finally:
        stop(gateway)
    code, report = verify(home)
    assert code == 0, report
