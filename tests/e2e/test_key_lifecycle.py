"""Acceptance (issue 4): rotation with overlap, expiry and allow-lists through the real server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway, Key, cli, cli_json

pytestmark = pytest.mark.e2e


def new_key(gateway: Gateway, name: str, *args: str) -> Key:
    data = cli_json(
        gateway.home, "keys", "create", "--account", "alice", "--scopes", "read,trade,cancel", *args
    )
    key = Key(
        data["key_id"],
        Path(data["private_key_path"]) if "private_key_path" in data else None,
        data.get("secret"),
    )
    gateway.keys[name] = key
    return key


def reason_for(gateway: Gateway, response: object) -> str:
    body = response.body["error"]  # type: ignore[attr-defined]
    assert (response.status, body["code"]) == (401, "AUTHENTICATION_FAILED")  # type: ignore[attr-defined]
    return str(gateway.entry_for(body["request_id"])["reason"])


def wait_until(deadline_seconds: float) -> None:
    time.sleep(max(0.0, deadline_seconds))


def test_rotation_with_overlap(gateway: Gateway) -> None:
    old = new_key(gateway, "rot_old", "--generate")
    assert gateway.call("rot_old", "GET", "/v1/account").status == 200
    rotated = cli_json(gateway.home, "keys", "rotate", old.key_id, "--overlap", "3s", "--generate")
    started = time.monotonic()
    assert rotated["rotated_from"] == old.key_id
    gateway.keys["rot_new"] = Key(rotated["key_id"], Path(rotated["private_key_path"]))
    assert gateway.call("rot_old", "GET", "/v1/account").status == 200  # both work during the overlap
    assert gateway.call("rot_new", "GET", "/v1/account").status == 200
    rotations = [e["data"] for e in gateway.ledger_entries() if e["kind"] == "key.rotated"]
    assert {"key_id": old.key_id, "successor": rotated["key_id"]}.items() <= rotations[-1].items()
    wait_until(3.2 - (time.monotonic() - started))
    assert reason_for(gateway, gateway.call("rot_old", "GET", "/v1/account")) == "expired key"
    assert gateway.call("rot_new", "GET", "/v1/account").status == 200
    again = cli(gateway.home, "keys", "rotate", old.key_id, "--generate", check=False)
    assert again.returncode == 2
    assert "no active key" in again.stderr


def test_an_hmac_key_rotates_to_a_new_secret(gateway: Gateway) -> None:
    old = new_key(gateway, "hrot_old", "--alg", "hmac")
    rotated = cli_json(gateway.home, "keys", "rotate", old.key_id, "--overlap", "1h")
    assert rotated["secret"].startswith("bsk_")
    assert rotated["secret"] != old.secret
    gateway.keys["hrot_new"] = Key(rotated["key_id"], secret=rotated["secret"])
    assert gateway.call("hrot_old", "GET", "/v1/account").status == 200
    assert gateway.call("hrot_new", "GET", "/v1/account").status == 200


def test_expiry_set_at_creation(gateway: Gateway) -> None:
    new_key(gateway, "short", "--generate", "--expires-in", "2s")
    started = time.monotonic()
    assert gateway.call("short", "GET", "/v1/account").status == 200
    wait_until(2.2 - (time.monotonic() - started))
    assert reason_for(gateway, gateway.call("short", "GET", "/v1/account")) == "expired key"


def test_a_request_from_outside_the_allow_list_is_refused(gateway: Gateway) -> None:
    key = new_key(gateway, "fenced", "--generate", "--allow-ip", "10.0.0.0/8", "--allow-ip", "192.168.0.0/16")
    assert "not in the key's allow-list" in reason_for(gateway, gateway.call("fenced", "GET", "/v1/account"))
    cli(gateway.home, "keys", "update", key.key_id, "--allow-ip", "127.0.0.0/8")
    assert gateway.call("fenced", "GET", "/v1/account").status == 200
    cli(gateway.home, "keys", "update", key.key_id, "--allow-ip", "203.0.113.0/24")
    assert "allow-list" in reason_for(gateway, gateway.call("fenced", "GET", "/v1/account"))
    cli(gateway.home, "keys", "update", key.key_id, "--any-ip")
    assert gateway.call("fenced", "GET", "/v1/account").status == 200
    bad = cli(gateway.home, "keys", "update", key.key_id, "--allow-ip", "10.0.0.5/8", check=False)
    assert bad.returncode == 2
    assert "CIDR" in bad.stderr


def test_keys_list_shows_last_use(gateway: Gateway) -> None:
    key = new_key(gateway, "seen", "--generate")
    assert gateway.call("seen", "GET", "/v1/account").status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = {k["key_id"]: k for k in cli_json(gateway.home, "keys", "list")["keys"]}
        if listed[key.key_id]["last_used_at"]:
            break
        time.sleep(0.5)
    assert listed[key.key_id]["last_used_ip"] == "127.0.0.1"
    assert listed[key.key_id]["last_used_at"]
