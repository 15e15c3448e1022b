"""Acceptance (issue 6): Redis-backed limits hold across two Bastion processes sharing one
Redis, and an unreachable Redis fails closed and shows in /healthz."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Key, cli, cli_json, free_port, serve
from tests.redis_server import redis_server

pytestmark = pytest.mark.e2e


def test_limits_hold_across_two_processes_and_fail_closed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli(home, "init")
    redis_port = free_port()
    with redis_server(tmp_path, redis_port) as (url, redis):
        config = home / "bastion.toml"
        text = config.read_text().replace('backend = "memory"', 'backend = "redis"')
        text = text.replace('redis_url = "redis://127.0.0.1:6379/0"', f'redis_url = "{url}"')
        config.write_text(
            text.replace("key_per_second = 20.0", "key_per_second = 0.01").replace(
                "key_burst = 40", "key_burst = 10"
            )
        )
        cli(home, "accounts", "create", "rl")
        data = cli_json(
            home, "keys", "create", "--account", "rl", "--scopes", "read,trade,cancel", "--generate"
        )
        keys = {"bot": Key(data["key_id"], Path(data["private_key_path"]))}
        servers = [
            serve(home, free_port(), keys, port_flag=True),
            serve(home, free_port(), keys, port_flag=True),
        ]
        try:
            statuses = [
                servers[n % 2].call("bot", "GET", "/v1/markets/GOOG/ticker").status for n in range(30)
            ]
            assert statuses.count(200) == 10 and statuses.count(429) == 20  # one budget, two processes
            limited = servers[0].call("bot", "GET", "/v1/markets/GOOG/ticker")
            assert (
                limited.headers["ratelimit-limit"] == "10" and limited.headers["ratelimit-remaining"] == "0"
            )
            assert int(limited.headers["retry-after"]) > 60

            redis.terminate()
            redis.wait(timeout=10)
            down = servers[1].call("bot", "GET", "/v1/account")
            assert down.status == 503 and down.body["error"]["code"] == "RATE_LIMITER_UNAVAILABLE"
            order = {
                "client_order_id": "rl-1",
                "symbol": "GOOG",
                "side": "buy",
                "type": "market",
                "quantity": "1",
            }
            assert (
                servers[0].call("bot", "POST", "/v1/orders", order).body["error"]["code"]
                == "RATE_LIMITER_UNAVAILABLE"
            )
            health = servers[0].raw("GET", "/healthz")
            assert health.status == 503 and "ratelimit" in health.body["checks"]
            assert not [
                e for e in servers[0].ledger_entries() if e["kind"] == "order.submit"
            ]  # nothing traded
        finally:
            for server in servers:
                server.process.terminate()
                server.process.wait(timeout=15)
