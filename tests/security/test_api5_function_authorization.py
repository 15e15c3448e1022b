"""OWASP API5:2023 Broken Function Level Authorization, against a real server.

Valid keys reaching for functions they were not given: a trade-only key cancelling, a
read-only key trading and cancelling, a cancel-only key reading; any key on the operator's
functions, which do not exist over HTTP at all (keys, policies, the kill switch, venues,
withdrawals: ``404``); methods a route does not declare (``405``), also through method-
override headers; and unsigned calls to every declared route (``401``). Each refusal is
recorded with its stage (``authz`` for scopes, ``edge`` for what does not exist) and
nothing changes: no order placed or canceled, no kill switch moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from bastion.schema import ROUTES
from tests.security.conftest import (
    ORDER,
    Target,
    assert_refused,
    entry_for,
    send,
    signed_raw,
    unchanged,
)

pytestmark = pytest.mark.e2e
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND")

# Operator functions (they exist only in the CLI and on the control socket) and other
# functions a bot key might hope for.
ADMIN = [
    "/admin",
    "/admin/",
    "/v1/admin",
    "/v1/admin/killswitch",
    "/v1/killswitch",
    "/v1/killswitch/global",
    "/killswitch",
    "/v1/keys",
    "/v1/keys/rotate",
    "/v1/policy",
    "/v1/policies/alice",
    "/v1/accounts",
    "/v1/accounts/bob",
    "/v1/venues",
    "/v1/credentials",
    "/v1/withdrawals",
    "/v1/transfers",
    "/v1/ledger/entries",
    "/v1/fraud/holds",
    "/v1/alerts",
    "/control",
    "/run/control.sock",
    "/v2/orders",
    "/V1/ORDERS",
    "/",
]


def cid(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**12}"


def path_of(route_path: str, target: Target) -> str:
    return (
        route_path.replace("{id}", target.order_ids["alice_open"])
        .replace("{index}", str(target.entry_index["alice_order"]))
        .replace("{symbol}", "GOOG")
    )


def test_a_trade_only_key_cannot_cancel(target: Target) -> None:
    order = target.order_ids["alice_open"]
    with unchanged(target):
        for _ in range(2):
            response = target.call("alice_trade", "DELETE", f"/v1/orders/{order}")
            entry = assert_refused(response, 403, "FORBIDDEN", "authz", reason="key lacks scope cancel")
            assert entry["route"] == "cancel_order" and entry["key_id"] == target.keys["alice_trade"].key_id
    assert target.call("alice", "GET", f"/v1/orders/{order}").body["status"] == "new"


def test_a_read_only_key_cannot_trade_or_cancel(target: Target) -> None:
    order = target.order_ids["alice_open"]
    with unchanged(target):
        market = {
            "client_order_id": cid("ro2"),
            "symbol": "GOOG",
            "side": "buy",
            "type": "market",
            "quantity": "1",
        }
        for body in (dict(ORDER, client_order_id=cid("ro")), market):
            response = target.call("alice_read", "POST", "/v1/orders", body)
            assert_refused(response, 403, "FORBIDDEN", "authz", reason="key lacks scope trade")
        response = target.call("alice_read", "DELETE", f"/v1/orders/{order}")
        assert_refused(response, 403, "FORBIDDEN", "authz", reason="key lacks scope cancel")
        # the order's retry (same client order id as alice_open) is no way round the scope
        response = target.call(
            "alice_read", "POST", "/v1/orders", dict(ORDER, client_order_id="alice_open-1")
        )
        assert_refused(response, 403, "FORBIDDEN", "authz", reason="key lacks scope trade")


def test_a_cancel_only_key_cannot_read_or_trade(target: Target) -> None:
    with unchanged(target):
        for route in ROUTES:
            if route.scope.value == "cancel":
                continue
            query = {"ledger_proof": "tree_size=100000", "ledger_consistency": "first=1&second=2"}.get(
                route.name, ""
            )
            body = dict(ORDER, client_order_id=cid("co")) if route.body is not None else None
            response = target.call(
                "alice_cancel", route.method, path_of(route.path, target), body, query=query
            )
            reason = f"key lacks scope {route.scope.value}"
            entry = assert_refused(response, 403, "FORBIDDEN", "authz", reason=reason)
            assert entry["route"] == route.name


def test_operator_functions_do_not_exist_over_http(target: Target) -> None:
    with unchanged(target):
        for path in ADMIN:
            for method in ("GET", "POST", "DELETE"):
                body = {"state": "off", "level": "global"} if method == "POST" else None
                for who in ("alice", "bob"):
                    response = target.call(who, method, path, body)
                    entry = assert_refused(response, 404, "NOT_FOUND", "edge", reason="undeclared route")
                    assert entry["route"] == "undeclared"
        unsigned = send(
            target, "POST", "/v1/killswitch", b'{"state": "off"}', {"content-type": "application/json"}
        )
        assert_refused(unsigned, 404, "NOT_FOUND", "edge")
    # `unchanged` also found no killswitch.changed (nor key or policy) entry in the block


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_the_kill_switch_is_not_on_the_network_at_all(target: Target) -> None:
    """Operator commands (the kill switch, policies, keys) reach a running server only over
    its control socket: a Unix socket in the home, 0600. The server listens on one TCP port,
    the gateway's, where those functions do not exist (see the test above)."""
    assert listening_ports(target.process.pid) == {target.port}
    control = target.home / "run" / "control.sock"
    mode = control.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_methods_a_route_does_not_declare_are_405(target: Target) -> None:
    declared: dict[str, set[str]] = {}
    for route in ROUTES:
        declared.setdefault(route.path, set()).add(route.method)
    with unchanged(target):
        for route_path, methods in declared.items():
            path = path_of(route_path, target)
            for method in METHODS:
                if method in methods:
                    continue
                body = dict(ORDER, client_order_id=cid("m")) if method in ("POST", "PUT", "PATCH") else None
                response = target.call("alice", method, path, body)
                entry = assert_refused(response, 405, "METHOD_NOT_ALLOWED", "edge", reason="HTTP 405")
                assert entry["method"] == method
        for path in ("/healthz", "/openapi.json", "/metrics"):
            response = target.call("alice", "POST", path, {"x": 1})
            assert_refused(response, 405, "METHOD_NOT_ALLOWED", "edge")


def test_method_override_headers_and_parameters_change_nothing(target: Target) -> None:
    order = target.order_ids["alice_open"]
    path = f"/v1/orders/{order}"
    overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
    ]
    with unchanged(target) as watch:
        for header in overrides:
            # POST on an order, asking to be a DELETE: the route has no POST
            response = signed_raw(target, "alice_read", "POST", path, headers=[header])
            assert_refused(response, 405, "METHOD_NOT_ALLOWED", "edge")
            # a GET asking to be a DELETE stays a read (allowed for a read key), and cancels nothing
            read = watch.allow(signed_raw(target, "alice_read", "GET", path, headers=[header]))
            assert read.status == 200 and read.body["status"] == "new"
        response = target.call("alice_read", "GET", path, query="_method=DELETE")
        assert_refused(
            response, 400, "BAD_REQUEST", "firewall", reason="query string on a route that takes none"
        )
    assert target.call("alice", "GET", path).body["status"] == "new"


def test_every_declared_route_refuses_an_unsigned_caller(target: Target) -> None:
    with unchanged(target):
        for route in ROUTES:
            query = {"ledger_proof": "tree_size=100000", "ledger_consistency": "first=1&second=2"}.get(
                route.name, ""
            )
            path = path_of(route.path, target) + (f"?{query}" if query else "")
            body = json.dumps(dict(ORDER, client_order_id=cid("anon"))).encode() if route.body else b""
            headers = {"content-type": "application/json"} if body else {}
            response = send(target, route.method, path, body, headers)
            entry = assert_refused(
                response, 401, "AUTHENTICATION_FAILED", "authn", reason="missing signature-input"
            )
            assert entry["route"] == route.name and entry["key_id"] is None


def test_trailing_slash_variants_are_404(target: Target) -> None:
    with unchanged(target):
        for method, path in (
            ("GET", "/v1/account/"),
            ("GET", "/v1/orders/"),
            ("POST", "/v1/orders/"),
            ("GET", "/openapi.json/"),
        ):
            body = dict(ORDER, client_order_id=cid("slash")) if method == "POST" else None
            response = target.call("alice", method, path, body)
            assert "location" not in response.headers, response.headers.get("location")
            assert_refused(response, 404, "NOT_FOUND", "edge")
        hijack = send(target, "GET", "/v1/orders/", headers={"Host": "evil.example"})
        assert hijack.status == 404 and "location" not in hijack.headers


def test_head_is_not_a_declared_method(target: Target) -> None:
    with unchanged(target):
        for path in (
            "/v1/account",
            f"/v1/orders/{target.order_ids['alice_open']}",
            "/v1/orders",
            "/v1/markets",
        ):
            response = target.call("alice", "HEAD", path)
            assert response.status == 405, f"HEAD {path}: {response.status}"
            entry = entry_for(target, response.headers["x-request-id"])
            assert (entry["verdict"], entry["stage"], entry["code"]) == ("deny", "edge", "METHOD_NOT_ALLOWED")
