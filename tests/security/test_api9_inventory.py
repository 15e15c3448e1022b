"""OWASP API Security Top 10 (2023), API9: improper inventory management.

The inventory is ``src/bastion/schema.py`` ``ROUTES``, the ``/openapi.json`` generated from it
and the endpoint tables of docs/api.md and docs/ledger.md.  Against a real server on loopback:
they agree with each other; every documented operation answers (and only with statuses it
documents); everything else (old versions, debug and documentation consoles, dotfiles,
internal and admin paths, case and encoding variants, ``/metrics`` for a stranger) is the
structured 404, signed or not, recorded in the ledger; undeclared methods are 405; and the
statuses ``POST /v1/orders`` really answers are all in its documented responses.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app as cli_app
from bastion.errors import MESSAGES, BastionError, ErrorCode
from bastion.schema import ROUTES
from tests.e2e.conftest import Gateway, Key, Response, _configure, free_port, serve, stop

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRAPER, STRANGER = "127.0.0.1", "127.0.0.2"
BODY_TIMEOUT = 1.0  # shield.body_timeout_seconds on this server: the slow-body 408 takes a second
SERVED_OUTSIDE_ROUTES = {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/metrics")}


def bastion(home: Path, *args: str) -> tuple[int, str, str]:
    """``bastion ARGS --home HOME`` in this process: the same commands and exit codes (a
    BastionError exits 2, as ``bastion.cli.main`` makes it) without a 1.7 s interpreter start."""
    result = CliRunner().invoke(cli_app, [*args, "--home", str(home)])
    code = 2 if isinstance(result.exception, BastionError) else result.exit_code
    return code, result.stdout, result.stderr


def bastion_json(home: Path, *args: str) -> dict[str, Any]:
    code, out, err = bastion(home, *args, "--json")
    assert code == 0, f"bastion {' '.join(args)}: exit {code}: {out}{err}"
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def _home(tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str) -> tuple[Path, int]:
    home = tmp_path_factory.mktemp(name)
    bastion_json(home, "init")
    port = free_port()
    _configure(home, port)
    config = home / "bastion.toml"
    text = config.read_text()
    for old, new in settings.items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    return home, port


def _keys(home: Path, specs: dict[str, str]) -> dict[str, Key]:
    bastion_json(home, "accounts", "create", "alice")
    keys = {}
    for name, scopes in specs.items():
        made = bastion_json(home, "keys", "create", "--account", "alice", "--scopes", scopes, "--generate")
        keys[name] = Key(made["key_id"], Path(made["private_key_path"]))
    return keys


@dataclass
class Inventory:
    gateway: Gateway
    doc: dict[str, Any]
    order_id: str
    entry_index: int
    # POST /v1/orders answers seen in this module: status -> the code (or "ok") that came with it
    post_orders: dict[int, str]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    home, port = _home(
        tmp_path_factory,
        "api9-home",
        **{
            'allowed_networks = ["127.0.0.0/8", "::1/128"]': f'allowed_networks = ["{SCRAPER}/32"]',
            "body_timeout_seconds = 10.0": f"body_timeout_seconds = {BODY_TIMEOUT}",
        },
    )
    keys = _keys(home, {"alice": "read,trade,cancel", "alice_read": "read", "alice_limited": "read,trade"})
    limited = home / "limited.json"
    limited.write_text(json.dumps({"rate_limit": {"per_second": "0.01", "burst": 1}}))
    bastion_json(home, "policy", "set", keys["alice_limited"].key_id, "--file", str(limited))
    gateway = serve(home, port, keys)
    try:
        placed = gateway.call("alice", "POST", "/v1/orders", _order("inv-0"))
        assert placed.status == 201, placed.body
        doc = gateway.raw("GET", "/openapi.json").body
        yield Inventory(gateway, doc, placed.body["id"], placed.body["receipt"]["index"], {201: "ok"})
    finally:
        stop(gateway)


def _order(client_order_id: str, **changes: str) -> dict[str, str]:
    order = {"client_order_id": client_order_id, "symbol": "GOOG", "side": "buy", "type": "limit"}
    return order | {"quantity": "1", "price": "1.00"} | changes


def _structured(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, (response.status, response.raw[:200])
    assert isinstance(response.body, dict) and set(response.body) == {"error"}, response.raw[:200]
    error: dict[str, Any] = response.body["error"]
    assert error["code"] == code and error["message"] == MESSAGES[ErrorCode(code)], error
    assert set(error) <= {"code", "message", "request_id", "reason"}, error
    assert response.headers.get("x-request-id") == error["request_id"]
    return error


def _edge_refusal(gateway: Gateway, response: Response, status: int, code: str, path: str) -> None:
    """The structured answer to an undeclared route or method, and its ledger entry."""
    error = _structured(response, status, code)
    entry = gateway.entry_for(error["request_id"])
    assert (entry["verdict"], entry["stage"], entry["code"], entry["route"]) == (
        "deny",
        "edge",
        code,
        "undeclared",
    )
    assert entry["path"] == path


# -- the inventory agrees with itself ---------------------------------------------------------
def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def test_api9_every_route_of_the_table_is_in_openapi_and_vice_versa(inventory: Inventory) -> None:
    doc = inventory.doc
    declared = {(r.method, r.path) for r in ROUTES}
    assert _documented(doc) - {("GET", "/healthz")} == declared
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.name and op["x-bastion-scope"] == route.scope.value
        assert op["security"] == [{"httpMessageSignature": []}]
        params = {(p["in"], p["name"]): p for p in op.get("parameters", [])}
        assert {name for kind, name in params if kind == "path"} == set(route.path_params)
        for name, pattern in route.path_params.items():
            assert params[("path", name)]["schema"]["pattern"] == pattern
        assert ("requestBody" in op) == (route.body is not None)
        assert {str(route.success), *map(str, route.errors)} <= set(op["responses"])


def test_api9_openapi_documents_every_query_parameter(inventory: Inventory) -> None:
    for route in ROUTES:
        op = inventory.doc["paths"][route.path][route.method.lower()]
        documented = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        fields = route.query.__struct_fields__ if route.query is not None else ()
        assert set(documented) == set(fields), route.name
        if route.query is not None:
            required = set(
                route.query.__struct_fields__[: len(fields) - len(route.query.__struct_defaults__)]
            )
            assert {n for n, p in documented.items() if p["required"]} == required, route.name


def _endpoint_tables() -> set[tuple[str, str]]:
    """(method, path) of every row of the endpoint tables in docs/api.md and docs/ledger.md."""
    rows: set[tuple[str, str]] = set()
    for name in ("api.md", "ledger.md"):
        text = (REPO / "docs" / name).read_text()
        for method, path in re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)", text, flags=re.M):
            rows.add((method, path))
    return rows


def test_api9_every_served_route_is_documented_and_every_documented_one_is_served(
    inventory: Inventory,
) -> None:
    served = {(r.method, r.path) for r in ROUTES} | SERVED_OUTSIDE_ROUTES
    tables = _endpoint_tables()
    assert tables == served
    # /openapi.json and /metrics are documented in docs/api.md but are not operations of the
    # OpenAPI document itself: the machine-readable inventory is the table's, minus those two.
    assert served - _documented(inventory.doc) == {("GET", "/openapi.json"), ("GET", "/metrics")}


# -- every documented operation answers -------------------------------------------------------
def _concrete(inventory: Inventory, method: str, path: str) -> tuple[str, str]:
    concrete = (
        path.replace("{id}", inventory.order_id)
        .replace("{symbol}", "GOOG")
        .replace("{index}", str(inventory.entry_index))
    )
    size = inventory.entry_index + 1
    query = {
        "/v1/ledger/entries/{index}/proof": f"tree_size={size}",
        "/v1/ledger/consistency": f"first=1&second={size}",
        "/v1/orders": "status=all" if method == "GET" else "",
    }.get(path, "")
    return concrete, query


def test_api9_every_documented_operation_answers_with_a_documented_status(inventory: Inventory) -> None:
    gateway, doc = inventory.gateway, inventory.doc
    names = {(r.method, r.path): r.name for r in ROUTES}
    for method, path in sorted(_documented(doc), key=lambda mp: (mp[1], mp[0] != "GET")):
        documented = set(doc["paths"][path][method.lower()]["responses"])
        concrete, query = _concrete(inventory, method, path)
        target = concrete + ("?" + query if query else "")
        if path == "/healthz":
            response = gateway.raw(method, target)
            assert response.status == 200 and response.body["status"] == "ok"
            continue
        raw_body = json.dumps(_order("inv-u")).encode() if method == "POST" else b""
        unsigned = gateway.raw(
            method, target, raw_body, {"content-type": "application/json"} if raw_body else {}
        )
        _structured(unsigned, 401, "AUTHENTICATION_FAILED")  # it exists: authentication answers
        assert gateway.entry_for(unsigned.body["error"]["request_id"])["route"] == names[(method, path)]
        body = _order("inv-1") if method == "POST" else None
        signed = gateway.call("alice", method, concrete, body, query=query)
        assert str(signed.status) in documented, (method, path, signed.status, signed.raw[:200])
        assert 200 <= signed.status < 300, (method, path, signed.status, signed.raw[:200])
        if method == "POST":
            inventory.post_orders[signed.status] = "ok"


# -- everything else is a structured 404 ------------------------------------------------------
UNDOCUMENTED = [
    "/v2/orders",
    "/v0/orders",
    "/api/v1/orders",
    "/v1/internal",
    "/v1/internal/orders",
    "/v1/admin",
    "/admin",
    "/debug",
    "/debug/vars",
    "/debug/pprof",
    "/docs",
    "/redoc",
    "/swagger.json",
    "/swagger-ui.html",
    "/openapi.yaml",
    "/v1/openapi.json",
    "/.env",
    "/.git/config",
    "/server-status",
    "/actuator/health",
    "/graphql",
    "/v1/keys",
    "/v1/withdrawals",
    "/v1/transfers",
    "/v1/account/withdraw",
    "/v1/ledger",
    "/V1/orders",
    "/v1/ORDERS",
    "/v1/Orders",
    "/HEALTHZ",
    "/v1/orders.json",
    "/v1/orders;jsessionid=1",
    "/v1//orders",
    "/v1/./orders",
    "/v1/orders/%2e%2e/account",
    "/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("path", UNDOCUMENTED)
def test_api9_an_undocumented_path_is_a_structured_404_in_the_ledger(inventory: Inventory, path: str) -> None:
    gateway = inventory.gateway
    _edge_refusal(gateway, gateway.raw("GET", path), 404, "NOT_FOUND", path)
    # Signed or not, the same answer: a valid key learns nothing more about what exists.
    _edge_refusal(gateway, gateway.call("alice", "GET", path), 404, "NOT_FOUND", path)
    _edge_refusal(
        gateway,
        gateway.raw("POST", path, b"{}", {"content-type": "application/json"}),
        404,
        "NOT_FOUND",
        path,
    )


def test_api9_metrics_for_a_stranger_is_the_same_404(inventory: Inventory) -> None:
    gateway = inventory.gateway
    _edge_refusal(gateway, gateway.raw("GET", "/metrics", source=STRANGER), 404, "NOT_FOUND", "/metrics")
    signed = gateway.call("alice", "GET", "/metrics", source=STRANGER)
    _edge_refusal(gateway, signed, 404, "NOT_FOUND", "/metrics")
    assert gateway.raw("GET", "/metrics", source=SCRAPER).status == 200  # control


@pytest.mark.parametrize(
    "path",
    ["/v1/orders/", "/v1/account/", "/v1/markets/", "/v1/markets/GOOG/ticker/", "/healthz/", "/metrics/"],
)
def test_api9_a_trailing_slash_is_a_structured_404_in_the_ledger(inventory: Inventory, path: str) -> None:
    """Not a redirect to the route without it (Starlette's default, whose Location comes from the
    Host header the client sends): the structured 404, recorded."""
    gateway = inventory.gateway
    response = gateway.raw("GET", path, headers={"host": "evil.example"})
    assert "location" not in response.headers, response.headers.get("location")
    _edge_refusal(gateway, response, 404, "NOT_FOUND", path)


# -- undeclared methods -----------------------------------------------------------------------
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def test_api9_undeclared_methods_are_405_in_the_ledger(inventory: Inventory) -> None:
    gateway, doc = inventory.gateway, inventory.doc
    served = _documented(doc) | SERVED_OUTSIDE_ROUTES
    checked = 0
    for path in sorted({p for _, p in served}):
        concrete, _ = _concrete(inventory, "GET", path)
        for method in METHODS:
            if (method, path) in served:
                continue
            _edge_refusal(gateway, gateway.raw(method, concrete), 405, "METHOD_NOT_ALLOWED", concrete)
            checked += 1
    assert checked >= 50


@pytest.mark.parametrize("path", ["/v1/account", "/v1/orders", "/healthz", "/openapi.json"])
def test_api9_head_is_an_undeclared_method(inventory: Inventory, path: str) -> None:
    """No route declares HEAD (Starlette would add it to every GET route): 405, signed or not,
    recorded.  An answer to HEAD has no body, so the ledger entry is found by X-Request-Id."""
    gateway = inventory.gateway
    answers = [gateway.raw("HEAD", path)]
    if path.startswith("/v1"):
        answers.append(gateway.call("alice", "HEAD", path))
    for response in answers:
        assert response.status == 405, (response.status, response.headers)
        entry = gateway.entry_for(response.headers["x-request-id"])
        found = (entry["verdict"], entry["stage"], entry["route"], entry["method"])
        assert found == ("deny", "edge", "undeclared", "HEAD")


# -- what POST /v1/orders answers, against what it documents ----------------------------------
def _slow_body(gateway: Gateway) -> Response:
    """POST /v1/orders whose body never finishes: 408 after shield.body_timeout_seconds."""
    body = json.dumps(_order("inv-slow")).encode()
    headers = gateway.signed_headers("alice", "POST", "/v1/orders", body=body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v1/orders HTTP/1.1\r\nHost: {gateway.authority}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw,
        gateway.context().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request.encode() + body[:10])
        tls.settimeout(BODY_TIMEOUT + 5)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head_text, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ")[1])
    fields = dict(line.split(": ", 1) for line in head_text.decode().split("\r\n")[1:])
    return Response(status, {k.lower(): v for k, v in fields.items()}, json.loads(payload), payload)


@pytest.fixture(scope="module")
def redis_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A server whose shared rate-limit store (Redis) is unreachable: it refuses orders with 503."""
    dead = free_port()  # nothing listens here
    home, port = _home(
        tmp_path_factory,
        "api9-redis-down",
        **{
            'backend = "memory"': 'backend = "redis"',
            'redis_url = "redis://127.0.0.1:6379/0"': f'redis_url = "redis://127.0.0.1:{dead}/0"',
        },
    )
    keys = _keys(home, {"alice": "read,trade,cancel"})
    out = (home / f"serve-{port}.out").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--home", str(home)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    out.close()
    gateway = Gateway(home, port, home / "tls" / "cert.pem", keys, process)
    try:
        deadline = time.monotonic() + 30
        while True:  # /healthz answers 503 while Redis is unreachable: wait for any answer
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if gateway.raw("GET", "/healthz").status in (200, 503):
                    break
            except OSError:
                time.sleep(0.1)
        yield gateway
    finally:
        stop(gateway)


def test_api9_post_orders_answers_each_status_as_docs_api_md_says(
    inventory: Inventory, redis_down: Gateway
) -> None:
    gateway, seen = inventory.gateway, inventory.post_orders
    first = _order("inv-2")

    def record(response: Response, status: int, code: str, reason: str | None = None) -> None:
        if status < 300:
            assert response.status == status, (response.status, response.raw[:200])
            seen[status] = "ok"
            return
        error = _structured(response, status, code)
        if reason is not None:
            assert error.get("reason") == reason, error
        seen[status] = code

    record(gateway.call("alice", "POST", "/v1/orders", first), 201, "ok")
    record(gateway.call("alice", "POST", "/v1/orders", first), 200, "ok")  # the retry
    record(
        gateway.call("alice", "POST", "/v1/orders", dict(first, quantity="2")), 409, "IDEMPOTENCY_CONFLICT"
    )
    record(
        gateway.raw("POST", "/v1/orders", b'{"client_order_id":', {"content-type": "application/json"}),
        400,
        "BAD_REQUEST",
    )
    record(
        gateway.raw(
            "POST", "/v1/orders", json.dumps(_order("inv-3")).encode(), {"content-type": "application/json"}
        ),
        401,
        "AUTHENTICATION_FAILED",
    )
    record(gateway.call("alice_read", "POST", "/v1/orders", _order("inv-4")), 403, "FORBIDDEN")
    record(
        gateway.raw(
            "POST", "/v1/orders", b"[" + b"0," * 40_000 + b"0]", {"content-type": "application/json"}
        ),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    record(
        gateway.raw("POST", "/v1/orders", b"{}", {"content-type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    record(
        gateway.call("alice", "POST", "/v1/orders", _order("inv-5", quantity="0.5")),
        422,
        "ORDER_REJECTED",
        "LOT_SIZE",
    )
    limited = [gateway.call("alice_limited", "POST", "/v1/orders", _order(f"inv-6-{n}")) for n in range(2)]
    assert limited[0].status == 201, limited[0].body
    record(limited[1], 429, "RATE_LIMITED")
    assert int(limited[1].headers["retry-after"]) >= 1
    # The route matched (Starlette decodes the path) but the firewall refuses the raw path.
    pct = gateway.call("alice", "POST", "/v1/%6frders", _order("inv-7"))
    record(pct, 404, "NOT_FOUND")
    assert gateway.entry_for(pct.body["error"]["request_id"])["route"] == "place_order"
    record(_slow_body(gateway), 408, "REQUEST_TIMEOUT")
    bad_utf8 = b'{"client_order_id":"\xff","symbol":"GOOG","side":"buy","type":"market","quantity":"1"}'
    record(  # once a 500 (the firewall did not catch the decoder's UnicodeDecodeError)
        gateway.raw("POST", "/v1/orders", bad_utf8, {"content-type": "application/json"}),
        400,
        "BAD_REQUEST",
    )
    record(redis_down.call("alice", "POST", "/v1/orders", _order("inv-8")), 503, "RATE_LIMITER_UNAVAILABLE")
    assert set(seen) >= {200, 201, 400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503}


def test_api9_openapi_documents_every_status_post_orders_answers(inventory: Inventory) -> None:
    if not {201, 408} <= set(inventory.post_orders):
        pytest.skip("needs test_api9_post_orders_answers_each_status_as_docs_api_md_says first")
    documented = {int(s) for s in inventory.doc["paths"]["/v1/orders"]["post"]["responses"]}
    assert set(inventory.post_orders) - documented == set()
