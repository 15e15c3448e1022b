"""Acceptance (issue 5): trading states and the risk book survive a restart; the kill switch
works with no server running (the CLI then does the work itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Key, _configure, cli, cli_json, free_port, serve, stop
from tests.e2e.test_killswitch import market, resting_buy

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, Key]]:
    home = tmp_path_factory.mktemp("restart")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    cli(home, "accounts", "create", "rs")
    data = cli_json(home, "keys", "create", "--account", "rs", "--scopes", "read,trade,cancel", "--generate")
    key = Key(data["key_id"], Path(data["private_key_path"]))
    return home, port, {"rs": key, "alice": key}  # the order helpers read prices as "alice"


def test_states_and_positions_survive_a_restart(home: tuple[Path, int, dict[str, Key]]) -> None:
    path, port, keys = home
    gateway = serve(path, port, keys)
    try:
        resting = [resting_buy(gateway, "rs") for _ in range(2)]
        assert market(gateway, "rs", "buy", "2").body["status"] == "filled"
        cli_json(path, "killswitch", "on", "--account", "rs", "--reduce-only")
    finally:
        stop(gateway)

    # no server: the CLI does it itself, cancelling at the venue
    status = cli_json(path, "killswitch", "status")
    assert status["states"] == [{"level": "account", "subject": "rs", "state": "reducing"}]
    report = cli_json(path, "killswitch", "on", "--global", "--cancel-open")
    assert report["running_server"] is False
    assert sorted(report["canceled"]) == sorted(o["id"] for o in resting)

    gateway = serve(path, port, keys)
    try:
        assert market(gateway, "rs", "sell", "1").body["error"]["reason"] == "TRADING_HALTED"
        for placed in resting:
            assert gateway.call("rs", "GET", f"/v1/orders/{placed['id']}").body["status"] == "canceled"
        cli_json(path, "killswitch", "off", "--global")
        # still REDUCING for the account, and the book knows the position of 2 from before the restart
        assert market(gateway, "rs", "buy", "1").body["error"]["reason"] == "REDUCE_ONLY"
        assert market(gateway, "rs", "sell", "3").body["error"]["reason"] == "REDUCE_ONLY"
        assert market(gateway, "rs", "sell", "2").status == 201
    finally:
        stop(gateway)
    assert cli_json(path, "ledger", "verify")["ok"] is True
