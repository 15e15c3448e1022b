"""OWASP API Security Top 10 (2023), API8: security misconfiguration.

Against a real server on loopback: old TLS versions and weak cipher suites (each refusal paired
with a control, the same client against a deliberately permissive local server, so a refusal
is the gateway's doing; ``tests/e2e/test_tls.py`` probes the same with ``openssl s_client``,
these use Python's ``ssl`` with explicit versions), the security headers on every kind of
answer, errors that never say more than their fixed message, no default credentials, private
file modes in the home and ``bastion doctor`` failing when they are not, plain HTTP on the TLS
port, ``/metrics`` for strangers, cross-origin reads and TRACE.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app as cli_app
from bastion.errors import MESSAGES, BastionError, ErrorCode
from tests.e2e.conftest import Gateway, Key, Response, _configure, free_port, serve, stop

pytestmark = pytest.mark.e2e

SCRAPER = "127.0.0.1"  # the only address allowed to scrape /metrics on this server
STRANGER = "127.0.0.2"
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# What an answer must never carry: a stack trace, an exception's name, SQL, a file path, the
# framework's name.  (Error messages are fixed sentences: none of these can occur in them.)
LEAKS = re.compile(
    rb"Traceback|File \"|\bline \d+|\.py\b|\b[A-Z][A-Za-z]+(?:Error|Exception|Warning)\b|"
    rb"\b(?:SELECT|INSERT|UPDATE|DELETE FROM|FROM|WHERE|JOIN)\b|sqlite|sqlalchemy|asyncpg|msgspec|"
    rb"starlette|uvicorn|httptools|/work/|/tmp/|/home/|/usr/|site-packages|\bat 0x[0-9a-f]+"
)


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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("api8-home")
    bastion_json(home, "init")
    port = free_port()
    _configure(home, port)
    config = home / "bastion.toml"
    config.write_text(
        config.read_text().replace(
            'allowed_networks = ["127.0.0.0/8", "::1/128"]', f'allowed_networks = ["{SCRAPER}/32"]'
        )
    )
    bastion_json(home, "accounts", "create", "alice")
    keys = {}
    for name, scopes in (("alice", "read,trade,cancel"), ("alice_read", "read")):
        made = bastion_json(home, "keys", "create", "--account", "alice", "--scopes", scopes, "--generate")
        keys[name] = Key(made["key_id"], Path(made["private_key_path"]))
    gateway = serve(home, port, keys)
    try:
        yield gateway
    finally:
        stop(gateway)


# -- TLS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def permissive(site: Gateway) -> Iterator[int]:
    """A local TLS server (the gateway's own certificate) that accepts every version and suite
    this OpenSSL has, so that each client below is shown to work somewhere."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:eNULL:aNULL:@SECLEVEL=0")
    context.load_cert_chain(site.cert, site.home / "tls" / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    done.set()
    thread.join(timeout=5)
    listener.close()


def handshake(port: int, version: ssl.TLSVersion, ciphers: str | None = None) -> tuple[str, str] | None:
    """(version, cipher) negotiated by a client that offers only ``version`` (and ``ciphers``),
    or None when the server refuses it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            cipher = tls.cipher()
            return str(tls.version()), cipher[0] if cipher else ""
    except (ssl.SSLError, OSError):
        return None


V = ssl.TLSVersion
WEAK = [
    pytest.param(V.TLSv1, "DEFAULT:@SECLEVEL=0", id="tls1.0"),
    pytest.param(V.TLSv1_1, "DEFAULT:@SECLEVEL=0", id="tls1.1"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0", id="cbc-sha1"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256", id="cbc-sha256"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES256-SHA384", id="cbc-sha384"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0", id="null-cipher"),
    pytest.param(V.TLSv1_2, "AECDH-AES128-SHA:@SECLEVEL=0", id="anonymous"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0", id="ccm8"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-CAMELLIA128-SHA256", id="camellia"),
    pytest.param(V.TLSv1_2, "ECDHE-ECDSA-ARIA128-GCM-SHA256", id="aria"),
]


@pytest.mark.parametrize(("version", "ciphers"), WEAK)
def test_api8_old_tls_versions_and_weak_ciphers_are_refused(
    site: Gateway, permissive: int, version: ssl.TLSVersion, ciphers: str
) -> None:
    assert handshake(permissive, version, ciphers) is not None, "control: works against a permissive server"
    assert handshake(site.port, version, ciphers) is None


@pytest.mark.parametrize(
    ("version", "ciphers", "negotiated"),
    [
        pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2", id="tls1.2-aes128-gcm"),
        pytest.param(V.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2", id="tls1.2-aes256-gcm"),
        pytest.param(V.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", "TLSv1.2", id="tls1.2-chacha20"),
        pytest.param(V.TLSv1_3, None, "TLSv1.3", id="tls1.3"),
    ],
)
def test_api8_tls12_and_tls13_are_accepted(
    site: Gateway, version: ssl.TLSVersion, ciphers: str | None, negotiated: str
) -> None:
    found = handshake(site.port, version, ciphers)
    assert found is not None and found[0] == negotiated
    if ciphers is not None:
        assert found[1] == ciphers


def test_api8_plain_http_on_the_tls_port_gets_no_http_answer(site: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except (TimeoutError, OSError):
            pass
    assert b"HTTP/1." not in data and b'"status"' not in data and b"paper" not in data
    # Neither is there a plain-HTTP listener next to it that would redirect.
    assert site.raw("GET", "/healthz").status == 200


# -- headers on every answer ------------------------------------------------------------------
ORDER = {"symbol": "GOOG", "side": "buy", "type": "limit", "quantity": "1", "price": "1.00"}
_UNSIGNED_JSON = {"content-type": "application/json"}


def _answers(site: Gateway) -> dict[str, Response]:
    """One answer of every kind: successes, each error status, the edge's 404/405, a stage failure."""
    first = dict(ORDER, client_order_id="hdr-1")
    bad_utf8 = MALFORMED_BODIES["invalid UTF-8"]
    cases: dict[str, Callable[[], Response]] = {
        "200 healthz": lambda: site.raw("GET", "/healthz"),
        "200 openapi": lambda: site.raw("GET", "/openapi.json"),
        "200 metrics": lambda: site.raw("GET", "/metrics", source=SCRAPER),
        "200 account": lambda: site.call("alice", "GET", "/v1/account"),
        "201 order": lambda: site.call("alice", "POST", "/v1/orders", first),
        "200 retry": lambda: site.call("alice", "POST", "/v1/orders", first),
        "409 conflict": lambda: site.call("alice", "POST", "/v1/orders", dict(first, quantity="2")),
        "422 rejected": lambda: site.call(
            "alice", "POST", "/v1/orders", dict(ORDER, client_order_id="hdr-2", quantity="0.5")
        ),
        "403 scope": lambda: site.call(
            "alice_read", "POST", "/v1/orders", dict(ORDER, client_order_id="hdr-3")
        ),
        "401 unsigned": lambda: site.raw("GET", "/v1/account"),
        "400 malformed": lambda: site.raw("POST", "/v1/orders", b'{"client_order_id":', _UNSIGNED_JSON),
        "413 too large": lambda: site.raw(
            "POST", "/v1/orders", b"[" + b"1," * 40_000 + b"1]", _UNSIGNED_JSON
        ),
        "415 media type": lambda: site.raw("POST", "/v1/orders", b"{}", {"content-type": "text/plain"}),
        "404 route": lambda: site.raw("GET", "/no/such/route"),
        "404 order": lambda: site.call("alice", "GET", f"/v1/orders/ord_{'z' * 24}"),
        "404 metrics": lambda: site.raw("GET", "/metrics", source=STRANGER),
        "405 method": lambda: site.raw("PATCH", "/v1/orders"),
        "400 invalid utf-8": lambda: site.raw("POST", "/v1/orders", bad_utf8, _UNSIGNED_JSON),
    }
    return {name: call() for name, call in cases.items()}


@pytest.fixture(scope="module")
def answers(site: Gateway) -> dict[str, Response]:
    return _answers(site)


def test_api8_every_kind_of_answer_has_the_expected_status(answers: dict[str, Response]) -> None:
    """The catalogue below is what it says it is (the header checks depend on it)."""
    assert {name: r.status for name, r in answers.items()} == {name: int(name.split()[0]) for name in answers}


@pytest.mark.parametrize("header", sorted(SECURITY_HEADERS))
def test_api8_security_headers_on_every_answer(answers: dict[str, Response], header: str) -> None:
    wrong = {
        name: r.headers.get(header)
        for name, r in answers.items()
        if r.headers.get(header) != SECURITY_HEADERS[header]
    }
    assert not wrong, f"{header} missing or wrong on {wrong}"


def test_api8_no_server_header_and_no_framework_banner(answers: dict[str, Response]) -> None:
    for name, response in answers.items():
        assert "server" not in response.headers, name
        assert "x-powered-by" not in response.headers, name
        banner = json.dumps(response.headers).lower()
        assert "uvicorn" not in banner and "starlette" not in banner and "python" not in banner, name


def _exchange(site: Gateway, data: bytes) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw,
        site.context().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(data)
        tls.settimeout(5)
        out = b""
        try:
            while chunk := tls.recv(65536):
                out += chunk
        except (TimeoutError, OSError):
            pass
    return out


def _head_fields(raw: bytes) -> dict[str, str]:
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}


CUT = [
    pytest.param(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "414", id="414-url-too-long"),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(80)) + b"\r\n",
        "431",
        id="431-too-many-headers",
    ),
    pytest.param(b"NOT-HTTP\r\n\r\n", "400", id="400-unparsable-request"),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400", id="400-bad-length"
    ),
]


@pytest.mark.parametrize(("request_bytes", "status"), CUT)
def test_api8_security_headers_on_answers_cut_at_the_connection(
    site: Gateway, request_bytes: bytes, status: str
) -> None:
    raw = _exchange(site, request_bytes)
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:100]
    fields = _head_fields(raw)
    assert "server" not in fields
    assert not LEAKS.search(raw.partition(b"\r\n\r\n")[2])
    missing = {h for h, v in SECURITY_HEADERS.items() if fields.get(h) != v}
    assert not missing, f"missing {sorted(missing)}"


def test_api8_every_answer_carries_a_request_id(answers: dict[str, Response]) -> None:
    missing = [
        name for name, r in answers.items() if not r.headers.get("x-request-id", "").startswith("req_")
    ]
    assert not missing


# -- verbose errors ---------------------------------------------------------------------------
_FULL = {"client_order_id": "ve-1", **ORDER}
MALFORMED_BODIES = {
    "truncated JSON": b'{"client_order_id": "x", "symbol": ',
    "not JSON": b"<xml>order</xml>",
    "a JSON array": b"[1, 2, 3]",
    "a JSON string": b'"order"',
    "deep nesting": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "wrong types": json.dumps({**_FULL, "quantity": 1, "price": 1.0}).encode(),
    "a 400-digit integer": json.dumps({**_FULL, "quantity": 10**400}).encode(),
    "NaN": json.dumps({**_FULL, "quantity": "NaN"}).encode(),
    "exponent": json.dumps({**_FULL, "quantity": "1e9"}).encode(),
    "negative": json.dumps({**_FULL, "quantity": "-1"}).encode(),
    "a lone surrogate": json.dumps({**_FULL, "client_order_id": "\ud800"}).encode(),
    "NUL in an id": json.dumps({**_FULL, "client_order_id": "a\x00b"}).encode(),
    "SQL in an id": json.dumps({**_FULL, "client_order_id": "1' OR '1'='1"}).encode(),
    "SQL in a label": json.dumps({**_FULL, "label": "x' UNION SELECT key_id FROM api_keys --"}).encode(),
    "script in a label": json.dumps({**_FULL, "label": "<script>alert(1)</script>"}).encode(),
    "traversal in a symbol": json.dumps({**_FULL, "symbol": "../../etc/passwd"}).encode(),
    "an unknown field": json.dumps({**_FULL, "__class__": "os.system"}).encode(),
    "a field a client may not set": json.dumps({**_FULL, "status": "filled", "account": "bob"}).encode(),
    "an unknown symbol": json.dumps({**_FULL, "symbol": "NOPE-USD"}).encode(),
    "a price on a market order": json.dumps({**_FULL, "type": "market"}).encode(),
    "invalid UTF-8": b'{"client_order_id":"\xff\xfe","symbol":"GOOG","side":"buy","type":"market",'
    b'"quantity":"1"}',
}
MALFORMED_TARGETS = [
    ("GET", "/v1/orders", "limit=abc"),
    ("GET", "/v1/orders", "limit=99999999999999999999999999"),
    ("GET", "/v1/orders", "status=%ZZ"),
    ("GET", "/v1/orders", "symbol[]=x&symbol[]=y"),
    ("GET", "/v1/orders", "status=open&status=closed"),
    ("GET", "/v1/orders/ord_%00%00", ""),
    ("GET", "/v1/orders/..%2f..%2fetc%2fpasswd", ""),
    ("GET", "/v1/markets/%3Cscript%3E/ticker", ""),
    ("GET", "/v1/ledger/consistency", "first=5&second=3"),
    ("GET", "/v1/ledger/consistency", "first=1&second=4611686018427387904"),
    ("GET", "/v1/ledger/entries/999999999999999999/proof", "tree_size=1"),
    ("DELETE", f"/v1/orders/ord_{'0' * 24}", ""),
]
MALFORMED_SIGNATURES = [
    {"signature-input": "garbage", "signature": "garbage"},
    {
        "signature-input": 'bastion=("@method");created=99999999999999999999;keyid="bst_x";nonce="n"',
        "signature": "x",
    },
    {"signature-input": 'bastion=("@method");keyid="' + "A" * 4000 + '"', "signature": "bastion=:!!!:"},
    {
        "signature-input": 'bastion=("@method" "@target-uri");created=1;'
        'keyid="bst_\'; DROP TABLE api_keys;--"',
        "signature": "bastion=:AAAA:",
    },
    {"authorization": "Basic YWRtaW46YWRtaW4="},
]


def _scan(name: str, response: Response) -> None:
    """A refusal that says nothing but its code's fixed message."""
    assert 400 <= response.status < 600, (name, response.status)
    assert not LEAKS.search(response.raw), (name, response.raw[:300])
    assert isinstance(response.body, dict) and set(response.body) == {"error"}, (name, response.raw[:300])
    error = response.body["error"]
    assert set(error) <= {"code", "message", "request_id", "reason"}, (name, error)
    assert error["message"] == MESSAGES[ErrorCode(error["code"])], (name, error)
    if "reason" in error:  # a machine-readable code, never prose
        assert re.fullmatch(r"[A-Z_]+|hold_[0-9a-f]+", error["reason"]), (name, error)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_api8_malformed_bodies_never_get_a_verbose_error(site: Gateway, signed: bool) -> None:
    for name, body in MALFORMED_BODIES.items():
        if signed:
            headers = site.signed_headers("alice", "POST", "/v1/orders", body=body)
            headers["content-type"] = "application/json"
        else:
            headers = dict(_UNSIGNED_JSON)
        _scan(name, site.raw("POST", "/v1/orders", body, headers))


def test_api8_malformed_queries_paths_and_signatures_never_get_a_verbose_error(site: Gateway) -> None:
    for method, path, query in MALFORMED_TARGETS:
        target = path + ("?" + query if query else "")
        _scan(f"signed {method} {target}", site.call("alice", method, path, query=query))
        _scan(f"unsigned {method} {target}", site.raw(method, target))
    for headers in MALFORMED_SIGNATURES:
        _scan(f"signature {headers}", site.raw("GET", "/v1/account", headers=headers))


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_api8_invalid_utf8_in_a_body_is_a_bad_request(site: Gateway, signed: bool) -> None:
    body = MALFORMED_BODIES["invalid UTF-8"]
    headers = site.signed_headers("alice", "POST", "/v1/orders", body=body) if signed else {}
    headers["content-type"] = "application/json"
    response = site.raw("POST", "/v1/orders", body, headers)
    _scan("invalid UTF-8", response)  # fail closed, no trace: this much holds today
    assert (response.status, response.body["error"]["code"]) == (400, "BAD_REQUEST")


def test_api8_a_body_with_a_duplicate_field_is_refused(site: Gateway) -> None:
    """A member named twice is ambiguous (RFC 8259 §4): a decoder keeps the last, a proxy or the
    edge's WAF may read the first and see another order than the one placed.  Refused."""
    for body in (
        b'{"client_order_id":"dup-first","client_order_id":"dup-second","symbol":"GOOG","side":"buy",'
        b'"type":"limit","quantity":"1","price":"1.00"}',
        b'{"client_order_id":"dup-3","symbol":"GOOG","side":"buy","type":"limit","quantity":"1",'
        b'"price":"1.00","pr\\u0069ce":"2.00"}',
    ):
        headers = site.signed_headers("alice", "POST", "/v1/orders", body=body)
        headers["content-type"] = "application/json"
        response = site.raw("POST", "/v1/orders", body, headers)
        if response.status == 201:  # do not leave the order resting
            site.call("alice", "DELETE", f"/v1/orders/{response.body['id']}")
        _scan("duplicate member", response)
        assert (response.status, response.body["error"]["code"]) == (400, "BAD_REQUEST"), response.body
        entry = site.entry_for(response.body["error"]["request_id"])
        assert (entry["verdict"], entry["stage"]) == ("deny", "firewall")
    orders = site.call("alice", "GET", "/v1/orders", query="status=all").body["orders"]
    assert not {o["client_order_id"] for o in orders} & {"dup-first", "dup-second", "dup-3"}


# -- no default credentials -------------------------------------------------------------------
BASIC_ADMIN = {"authorization": "Basic YWRtaW46YWRtaW4="}  # admin:admin


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("POST", "/login"),
        ("POST", "/v1/login"),
        ("POST", "/v1/auth/token"),
        ("POST", "/oauth/token"),
        ("GET", "/v1/admin/keys"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/users"),
    ],
)
def test_api8_there_is_no_admin_or_login_route(site: Gateway, method: str, path: str) -> None:
    body = b'{"username":"admin","password":"admin"}' if method == "POST" else b""  # pragma: allowlist secret
    response = site.raw(method, path, body, {**BASIC_ADMIN, **(_UNSIGNED_JSON if body else {})})
    _scan(path, response)
    assert response.status == 404 and response.body["error"]["code"] == "NOT_FOUND"
    entry = site.entry_for(response.body["error"]["request_id"])
    assert (entry["verdict"], entry["stage"], entry["route"]) == ("deny", "edge", "undeclared")


def test_api8_no_route_accepts_a_password(site: Gateway) -> None:
    openapi = site.raw("GET", "/openapi.json")
    document = openapi.raw.decode().lower()
    for word in ("password", "passwd", "basic", "bearer", "oauth", "login", "username", "credential"):
        assert word not in document, word
    schemes = openapi.body["components"]["securitySchemes"].values()
    assert [(s["type"], s["in"], s["name"]) for s in schemes] == [("apiKey", "header", "Signature")]
    for header in (BASIC_ADMIN, {"authorization": "Bearer admin"}, {"x-api-key": "admin"}):
        response = site.raw("GET", "/v1/account", headers=header)
        _scan(str(header), response)
        assert response.status == 401 and response.body["error"]["code"] == "AUTHENTICATION_FAILED"
        assert b"balances" not in response.raw
    with_password = dict(ORDER, client_order_id="pw-1", password="admin")
    response = site.call("alice", "POST", "/v1/orders", with_password)
    assert response.status == 400 and response.body["error"]["code"] == "BAD_REQUEST"
    assert "unknown field `password`" in site.entry_for(response.body["error"]["request_id"])["reason"]


def test_api8_every_init_generates_its_own_secrets_and_no_default_key(tmp_path: Path) -> None:
    homes = [tmp_path / "one", tmp_path / "two"]
    for home in homes:
        assert bastion(home, "init")[0] == 0
    for secret in ("vault/master-1.key", "tls/key.pem", "tls/cert.pem"):
        one, two = ((home / secret).read_bytes() for home in homes)
        assert one and one != two, secret
    ledger_keys = [bastion(home, "ledger", "public-key")[1] for home in homes]
    assert "PUBLIC KEY" in ledger_keys[0] and ledger_keys[0] != ledger_keys[1]
    for home in homes:
        assert bastion_json(home, "keys", "list")["keys"] == []  # no account, no key to guess
        assert not (home / "keys").exists()


# -- files ------------------------------------------------------------------------------------
def test_api8_the_home_of_a_serving_gateway_is_private(site: Gateway) -> None:
    home = site.home
    site.call("alice", "GET", "/v1/account")  # the log and the database have been written
    expected = [
        home / "bastion.toml",
        home / "bastion.db",
        home / "vault" / "master-1.key",
        home / "tls" / "key.pem",
        home / "logs" / "bastion.log",
        *(home / "keys").glob("*.pem"),
    ]
    assert len(expected) == 7  # with two generated private keys
    for path in expected:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    # Nothing in the home is readable by group or others but the certificate (public) and the
    # test harness's own capture of the server's output.
    public = {home / "tls" / "cert.pem", *home.glob("serve-*.out")}
    exposed = [
        (str(path.relative_to(home)), oct(stat.S_IMODE(path.lstat().st_mode)))
        for path in [home, *home.rglob("*")]
        if path not in public and stat.S_IMODE(path.lstat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    assert not exposed


@pytest.fixture
def audited(tmp_path: Path) -> Path:
    home = tmp_path / "audited"
    assert bastion(home, "init")[0] == 0
    code, out, err = bastion(home, "doctor", "--json")
    assert code == 0, (out, err)  # control: a fresh home passes
    return home


def _doctor_failures(home: Path) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = bastion(home, "doctor", "--json")
    checks = json.loads(out.strip().splitlines()[-1])["checks"] if out.strip() else []
    return code, [c for c in checks if c["level"] == "fail"], err


@pytest.mark.parametrize(
    ("relative", "mode", "check"),
    [
        pytest.param("tls/key.pem", 0o644, "TLS private key", id="tls-key"),
        pytest.param("bastion.toml", 0o604, "settings file", id="settings"),
        pytest.param("bastion.db", 0o640, "database file", id="database"),
        pytest.param(".", 0o755, "home directory", id="home"),
    ],
)
def test_api8_doctor_fails_when_a_private_file_is_readable_by_others(
    audited: Path, relative: str, mode: int, check: str
) -> None:
    path = (audited / relative).resolve()
    path.chmod(mode)
    code, failures, err = _doctor_failures(audited)
    assert code == 1, err
    assert [f["name"] for f in failures] == [check]
    assert failures[0]["fix"] == f"chmod {'700' if path.is_dir() else '600'} {path}"
    path.chmod(0o700 if path.is_dir() else 0o600)
    assert _doctor_failures(audited)[0] == 0


def test_api8_doctor_fails_when_the_master_keyfile_is_world_readable(audited: Path) -> None:
    keyfile = audited / "vault" / "master-1.key"
    keyfile.chmod(0o644)
    code, out, err = bastion(audited, "doctor", "--json")
    assert code != 0
    assert str(keyfile) in err + out and "chmod 600" in err + out
    keyfile.chmod(0o600)
    assert bastion(audited, "doctor", "--json")[0] == 0


def test_api8_doctor_reports_a_world_readable_master_keyfile_as_a_failed_check(audited: Path) -> None:
    keyfile = audited / "vault" / "master-1.key"
    keyfile.chmod(0o644)
    try:
        code, failures, err = _doctor_failures(audited)
        assert code == 1, err
        assert [f["name"] for f in failures] == ["master keyfile master-1.key"]
    finally:
        keyfile.chmod(0o600)


# -- /metrics, CORS, TRACE --------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"x-forwarded-for": SCRAPER}, {"forwarded": f"for={SCRAPER}"}, {"x-real-ip": SCRAPER}],
    ids=["stranger", "x-forwarded-for", "forwarded", "x-real-ip"],
)
def test_api8_metrics_are_not_served_to_a_stranger(site: Gateway, headers: dict[str, str]) -> None:
    response = site.raw("GET", "/metrics", headers=headers, source=STRANGER)
    _scan("metrics", response)
    assert response.status == 404 and response.body["error"]["code"] == "NOT_FOUND"
    assert b"bastion_" not in response.raw
    entry = site.entry_for(response.body["error"]["request_id"])
    assert (entry["verdict"], entry["stage"], entry["code"]) == ("deny", "edge", "NOT_FOUND")
    assert site.raw("GET", "/metrics", source=SCRAPER).status == 200  # control


def test_api8_no_cross_origin_reads(site: Gateway) -> None:
    origin = {"origin": "https://evil.example"}
    preflight = site.raw("OPTIONS", "/v1/account", headers={**origin, "access-control-request-method": "GET"})
    _scan("preflight", preflight)
    assert preflight.status == 405
    for response in (
        preflight,
        site.raw("GET", "/healthz", headers=origin),
        site.raw("GET", "/openapi.json", headers=origin),
        site.raw("GET", "/v1/account", headers=origin),
    ):
        assert not any(name.startswith("access-control-") for name in response.headers), response.headers


def test_api8_trace_does_not_echo_the_request(site: Gateway) -> None:
    for path in ("/", "/v1/orders", "/healthz"):
        response = site.raw("TRACE", path, headers={"x-probe": "echo-me-0123456789"})
        _scan(f"TRACE {path}", response)
        assert response.status in (404, 405)
        assert b"echo-me-0123456789" not in response.raw
