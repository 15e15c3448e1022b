"""The target of the OWASP API Security Top 10 suite: a real ``bastion serve`` on 127.0.0.1.

Every module ``test_apiN_*.py`` attacks one category. Each attack asserts the precise refusal
(status, error code, the request's ledger entry: verdict, stage, code) and that nothing
changed (no order placed or canceled, no balance moved, no secret returned).

Fixtures and helpers (names are stable; other modules import them from here):

``target`` (session fixture)
    A :class:`Target` (a :class:`tests.e2e.conftest.Gateway`): ``bastion init``, then
    ``bastion serve`` over TLS on a free port of 127.0.0.1, with two funded accounts,
    ``alice`` and ``bob``, and these keys in ``target.keys``:

    ============== ======= ===================== ==========================================
    name           account scopes                what it is
    ============== ======= ===================== ==========================================
    alice          alice   read, trade, cancel   Ed25519
    alice_read     alice   read
    alice_trade    alice   read, trade
    alice_hmac     alice   read, trade, cancel   HMAC-SHA256 (``Key.secret``)
    alice_slow     alice   read                  policy ``rate_limit`` 0.2/s, burst 2 (API4)
    alice_cancel   alice   cancel                no read scope at all
    bob            bob     read, trade, cancel
    revoked        alice   read, trade, cancel   revoked by ``bastion keys revoke``
    expired        alice   read, trade, cancel   issued with a lifetime of 1 s
    rotated_out    alice   read, trade, cancel   ``bastion keys rotate --overlap 0s``: stopped
    rotated_in     alice   read, trade, cancel   its successor (works)
    ============== ======= ===================== ==========================================

    ``target.order_ids``: ``alice_open`` and ``bob_open`` (GOOG limit buys of 1 at 1.00, far
    below the market: they rest for ever), ``bob_filled`` (a filled GOOG market buy).
    ``target.entry_index``: ``alice_order`` and ``bob_order``, the ledger indices of the
    requests that placed ``alice_open`` and ``bob_open`` (from their receipts).
    ``target.secrets``: what must never appear in an answer (the HMAC secret, every private
    key, alice's venue credential).

``snapshot(target) -> dict``
    The ledger's size, then alice's and bob's balances and every order
    (``GET /v1/account``, ``GET /v1/orders?status=all&limit=500``). Its own reads are
    allowed requests: they land in the ledger after the size is taken.

``unchanged(target)`` (context manager, yields a :class:`Watch`)
    Snapshots before and after the block and requires them equal; requires that the ledger
    entries written inside the block hold no allowed request (except those passed to
    ``watch.allow(response)``) and no order, key, policy or kill-switch event; and that
    every refusal checked with ``assert_refused`` inside the block has its entry there.
    ``watch.entries`` is that slice of the ledger after the block.

``assert_refused(response, status, code, stage=None, *, reason=None) -> dict``
    The response is the documented refusal: status, code, the code's fixed message, a
    request id (also in ``X-Request-Id``), no other field but ``reason``. Its ledger entry
    (found by request id) is a ``deny`` with that code (and ``stage``; ``reason`` is a
    substring of the recorded reason). Returns the entry's data.

``refusal_shape(response)``
    What a caller can tell of a refusal (status, body without the request id, header names):
    equal shapes leak nothing (a foreign order looks like a missing one).

``assert_cut(response, status, code)``
    A refusal at the connection (431, 414, 503 ``TOO_MANY_CONNECTIONS``): never in the ledger.

``sign(target, who, method, path, ...) -> dict`` and ``signed_raw(target, who, method, path, ...)``
    Hand-built RFC 9421 signatures: choose the covered components, ``created``, ``nonce``,
    ``alg`` (``KEY_ALG``: the key's own; ``None``: omitted), ``keyid``, ``expires``, extra
    parameters, the label, another key to sign with (``signer=``), an HMAC secret of your
    own (``hmac_secret=``), the authority signed. ``signed_raw`` sends the request with
    ``send`` (``headers`` adds field lines, duplicates allowed; ``drop`` removes some).

``send(target, method, target_path, body, headers)``, ``exchange(target, data)``
    One request with exactly the given field lines (``send``), or raw bytes over TLS
    (``exchange``, answered with :func:`parse_response`); ``tls_socket`` and
    ``read_response`` for conversations of your own.

``entry_for(target, request_id)``, ``entries_since(target, index)``, ``ledger_size(target)``,
``assert_no_secret(target, *responses)``
    The ledger read from the database, and a scan of answers for ``target.secrets``.

Tests that place orders cancel them (or place them so they never rest near the market):
bars last a second here, and an order that fills later would move a balance inside some
other test's ``unchanged`` block.

Settings: ``tests.e2e.conftest._configure`` (bans and key lockouts raised, the fraud stage
only records: the suite is refused on purpose hundreds of times from one address, and
bans and the fraud stage's actions are tested on servers of their own), plus one change:
``shield.body_timeout_seconds`` is 2 s instead of 10 so the slow-body attack (API4) takes
2 s. Connection limits (64 connections per address, 64 headers, 16 KiB of headers, 2 KiB
URLs) are the shipped defaults. Attacks that flood connections use their own client
address (any of 127.0.0.0/8) so that other tests are not affected.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.config import load_settings
from bastion.crypto import httpsig, sfv
from bastion.crypto.digest import content_digest
from bastion.crypto.keys import generate_ed25519, load_ed25519_private, private_key_pem, write_secret_file
from bastion.domain.policy import document_from
from bastion.domain.principals import parse_scopes
from bastion.errors import MESSAGES, ErrorCode
from bastion.services import Services
from tests.e2e.conftest import Gateway, Key, Response, _configure, cli, cli_json, free_port, serve, stop

ACCOUNTS = ("alice", "bob")
ORDER = {
    "client_order_id": "sec-0",
    "symbol": "GOOG",
    "side": "buy",
    "type": "limit",
    "quantity": "1",
    "price": "1.00",
}
# The keys issued for the suite: name -> (account, scopes, lifetime).
_KEYS: dict[str, tuple[str, str, timedelta]] = {
    "alice": ("alice", "read,trade,cancel", timedelta(days=1)),
    "alice_read": ("alice", "read", timedelta(days=1)),
    "alice_trade": ("alice", "read,trade", timedelta(days=1)),
    "alice_slow": ("alice", "read", timedelta(days=1)),
    "alice_cancel": ("alice", "cancel", timedelta(days=1)),
    "bob": ("bob", "read,trade,cancel", timedelta(days=1)),
    "revoked": ("alice", "read,trade,cancel", timedelta(days=1)),
    "expired": ("alice", "read,trade,cancel", timedelta(seconds=1)),
    "rotated_out": ("alice", "read,trade,cancel", timedelta(days=1)),
}
SLOW_RATE = {"per_second": "0.2", "burst": 2}
_EVENT_KINDS = ("order.", "key.", "policy.", "killswitch.", "credential.", "vault.", "subject.", "account.")


@dataclass
class Target(Gateway):
    order_ids: dict[str, str] = field(default_factory=dict)
    entry_index: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)


# -- the server ------------------------------------------------------------------------------
_TARGET: list[Target] = []  # the session's target, for helpers that are not given one


def _provision(home: Path, venue_credential: dict[str, str]) -> tuple[dict[str, Key], str]:
    """The accounts, keys, alice's venue credential and alice_slow's policy, through the same
    operator actions (``Services``) the CLI runs, in this process: a CLI call is a process
    that spends over a second importing, and concurrent ones contend for the database, so
    issuing a dozen keys that way would cost the suite half a minute. The actions the
    attacks are about (revoking, rotating with no overlap) go through the CLI itself."""
    keys: dict[str, Key] = {}

    async def provision(services: Services) -> str:
        for account in ACCOUNTS:
            await services.create_account(account)
        for name, (account, scopes, lifetime) in _KEYS.items():
            private = generate_ed25519()
            record, _ = await services.create_key(
                account=account,
                scopes=parse_scopes(scopes),
                public_key=private.public_key(),
                lifetime=lifetime,
                label=f"owasp {name}",
            )
            path = home / "keys" / f"{record.key_id}.pem"
            write_secret_file(path, private_key_pem(private))
            keys[name] = Key(record.key_id, path)
        record, secret = await services.create_key(
            account="alice", scopes=parse_scopes("read,trade,cancel"), label="owasp alice_hmac"
        )
        assert secret is not None
        keys["alice_hmac"] = Key(record.key_id, secret=secret)
        raw = json.dumps(venue_credential).encode()
        await services.add_venue_credential("alice", services.venue.name, raw)
        policy = document_from({"rate_limit": SLOW_RATE})
        await services.set_policy(keys["alice_slow"].key_id, policy, actor="owasp suite")
        return secret

    async def main() -> str:
        services = Services.build(home, load_settings(home))
        await services.start()
        try:
            return await provision(services)
        finally:
            await services.close()

    secret = asyncio.run(main())
    return keys, secret


def _seed(target: Target) -> None:
    for who, name in (("alice", "alice_open"), ("bob", "bob_open")):
        placed = target.call(who, "POST", "/v1/orders", dict(ORDER, client_order_id=f"{name}-1"))
        assert placed.status == 201 and placed.body["status"] == "new", placed.body
        target.order_ids[name] = placed.body["id"]
        target.entry_index[name.replace("_open", "_order")] = placed.body["receipt"]["index"]
    market = {"client_order_id": "bob-filled-1", "symbol": "GOOG", "side": "buy", "type": "market"}
    filled = target.call("bob", "POST", "/v1/orders", market | {"quantity": "1"})
    assert filled.status == 201 and filled.body["status"] == "filled", filled.body
    target.order_ids["bob_filled"] = filled.body["id"]


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    home = tmp_path_factory.mktemp("owasp")
    cli(home, "init")
    port = free_port()
    _configure(home, port)
    config = home / "bastion.toml"
    config.write_text(config.read_text().replace("body_timeout_seconds = 10.0", "body_timeout_seconds = 2.0"))
    venue = {"api_key": f"pk-{secrets.token_hex(12)}", "api_secret": f"ps-{secrets.token_hex(24)}"}
    keys, hmac_secret = _provision(home, venue)
    cli(home, "keys", "revoke", keys["revoked"].key_id)
    rotated = cli_json(home, "keys", "rotate", keys["rotated_out"].key_id, "--overlap", "0s", "--generate")
    keys["rotated_in"] = Key(rotated["key_id"], Path(rotated["private_key_path"]))
    gateway = serve(home, port, keys)
    target = Target(**{name: getattr(gateway, name) for name in Gateway.__dataclass_fields__})
    target.secrets = {
        "hmac secret": hmac_secret.encode(),
        "venue api key": venue["api_key"].encode(),
        "venue api secret": venue["api_secret"].encode(),
    }
    for name, key in keys.items():
        if key.private_key_path is not None:
            pem = key.private_key_path.read_bytes()
            raw = load_ed25519_private(pem).private_bytes_raw()
            target.secrets[f"{name} private key (PEM body)"] = pem.splitlines()[1]
            target.secrets[f"{name} private key (base64)"] = base64.b64encode(raw)
            target.secrets[f"{name} private key (hex)"] = raw.hex().encode()
    try:
        _seed(target)
        _TARGET.append(target)
        yield target
    finally:
        _TARGET.clear()
        stop(target)


def _the_target(given: Target | None) -> Target:
    if given is not None:
        return given
    assert _TARGET, "the `target` fixture is not running"
    return _TARGET[0]


# -- the ledger ------------------------------------------------------------------------------
def _query(target: Gateway, sql: str, *args: object) -> list[Any]:
    with closing(sqlite3.connect(target.home / "bastion.db", timeout=10)) as db:
        return db.execute(sql, args).fetchall()


def ledger_size(target: Gateway) -> int:
    return int(_query(target, "SELECT COUNT(*) FROM ledger_entries")[0][0])


def entries_since(target: Gateway, start: int) -> list[dict[str, Any]]:
    """Every ledger entry from index ``start`` on, decoded."""
    rows = _query(target, "SELECT body FROM ledger_entries WHERE idx >= ? ORDER BY idx", start)
    return [json.loads(r[0]) for r in rows]


def entry_for(target: Gateway, request_id: str) -> dict[str, Any]:
    """The data of the request entry for ``request_id`` (the newest entries first)."""
    size = ledger_size(target)
    for start in (max(0, size - 200), 0):
        for entry in reversed(entries_since(target, start)):
            if entry["kind"] == "request" and entry["data"].get("request_id") == request_id:
                data: dict[str, Any] = entry["data"]
                return data
    raise AssertionError(f"no ledger entry for {request_id}")


# -- state -----------------------------------------------------------------------------------
def snapshot(target: Gateway) -> dict[str, Any]:
    state: dict[str, Any] = {"ledger_size": ledger_size(target)}
    for who in ACCOUNTS:
        account = target.call(who, "GET", "/v1/account")
        orders = target.call(who, "GET", "/v1/orders", query="status=all&limit=500")
        assert account.status == orders.status == 200, (account.body, orders.body)
        balances = sorted(account.body["balances"], key=lambda b: b["asset"])
        state[who] = {
            "account": account.body["account"],
            "balances": balances,
            "orders": orders.body["orders"],
        }
    return state


@dataclass
class Watch:
    start: int
    refused: set[str] = field(default_factory=set)
    allowed: set[str] = field(default_factory=set)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def allow(self, response: Response) -> Response:
        """A request of the block that is allowed on purpose (a control, a list that must not leak)."""
        self.allowed.add(response.headers["x-request-id"])
        return response


_WATCHES: list[Watch] = []


@contextmanager
def unchanged(target: Gateway) -> Iterator[Watch]:
    before = snapshot(target)
    watch = Watch(ledger_size(target))
    _WATCHES.append(watch)
    try:
        yield watch
    finally:
        _WATCHES.remove(watch)
    watch.entries = entries_since(target, watch.start)
    after = snapshot(target)
    for who in ACCOUNTS:
        assert after[who]["balances"] == before[who]["balances"], f"{who}'s balances moved"
        assert after[who]["orders"] == before[who]["orders"], f"{who}'s orders changed"
    events = [e["kind"] for e in watch.entries if e["kind"].startswith(_EVENT_KINDS)]
    assert not events, f"the attack wrote {events}"
    requests = {e["data"]["request_id"]: e["data"] for e in watch.entries if e["kind"] == "request"}
    allowed = [
        (r["route"], r.get("status"))
        for rid, r in requests.items()
        if r["verdict"] != "deny" and rid not in watch.allowed
    ]
    assert not allowed, f"requests allowed during the attack: {allowed}"
    missing = watch.refused - set(requests)
    assert not missing, f"refusals not recorded in the block: {missing}"


# -- assertions ------------------------------------------------------------------------------
def assert_refused(
    response: Response,
    status: int,
    code: str,
    stage: str | None = None,
    *,
    reason: str | None = None,
    target: Gateway | None = None,
) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body)
    assert isinstance(response.body, dict), response.raw[:200]
    error = response.body["error"]
    assert set(response.body) == {"error"}
    assert error["code"] == code, error
    assert error["message"] == MESSAGES[ErrorCode(code)]
    assert set(error) <= {"code", "message", "request_id", "reason"}, error
    request_id = error["request_id"]
    assert request_id.startswith("req_") and response.headers.get("x-request-id") == request_id
    assert b"Traceback" not in response.raw
    entry = entry_for(target if target is not None else _the_target(None), request_id)
    assert entry["verdict"] == "deny", entry
    assert entry["code"] == code, entry
    if stage is not None:
        assert entry["stage"] == stage, entry
    if reason is not None:
        assert reason in entry["reason"], entry
    for watch in _WATCHES:
        watch.refused.add(request_id)
    return entry


def refusal_shape(response: Response) -> tuple[object, ...]:
    error = dict(response.body["error"]) if isinstance(response.body, dict) else {}
    error.pop("request_id", None)
    return response.status, tuple(sorted(error.items())), tuple(sorted(response.headers))


def assert_cut(response: Response, status: int, code: str) -> None:
    """Refused at the connection: the documented status and code, no request id, closed."""
    assert response.status == status, (response.status, response.raw[:200])
    assert response.body == {"error": {"code": code, "message": "Refused at the connection."}}
    assert response.headers.get("connection") == "close"
    assert "x-request-id" not in response.headers


def assert_no_secret(target: Target, *responses: Response) -> None:
    for response in responses:
        blob = response.raw + json.dumps(response.headers).encode()
        for name, value in target.secrets.items():
            assert value not in blob, f"{name} in an answer"
        for marker in (b"PRIVATE KEY", b"bsk_"):
            assert marker not in blob, f"{marker!r} in an answer"


# -- hand-built requests ---------------------------------------------------------------------
KEY_ALG = "<the key's own>"


def sign(
    target: Gateway,
    who: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    *,
    components: Sequence[str] | None = None,
    created: int | None = None,
    nonce: str | None = None,
    alg: str | None = KEY_ALG,
    keyid: str | None = None,
    expires: int | None = None,
    params: dict[str, sfv.BareItem] | None = None,
    lead: dict[str, sfv.BareItem] | None = None,
    label: str = "bastion",
    signer: str | None = None,
    hmac_secret: bytes | None = None,
    private_key: Ed25519PrivateKey | None = None,
    authority: str | None = None,
    covered_headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """Signature headers (and Content-Digest and Content-Type for a body) built by hand.

    The signature base is RFC 9421's over ``components`` (default: ``@method``,
    ``@target-uri`` and, with a body, ``content-digest``), with the parameters in the
    order ``lead``, ``created, keyid, nonce, alg, expires``, then ``params`` (which may
    also replace any of them: ``params={"created": "x"}``). It is signed with
    ``hmac_secret`` or ``private_key`` when given, else with the key named ``signer``
    (default ``who``); ``keyid`` (default ``who``'s key id) is what the request claims.
    ``covered_headers`` are field values the base covers (returned too, to send or drop)."""
    key = target.keys[who]
    headers: dict[str, str] = dict(covered_headers or {})
    if body:
        headers.setdefault("content-digest", content_digest(body))
    if components is None:
        components = ("@method", "@target-uri", *(("content-digest",) if body else ()))
    chosen: dict[str, sfv.BareItem] = dict(lead or {})
    chosen |= {
        "created": int(time.time()) if created is None else created,
        "keyid": key.key_id if keyid is None else keyid,
        "nonce": secrets.token_urlsafe(24) if nonce is None else nonce,
    }
    if alg == KEY_ALG:
        alg = httpsig.HMAC_SHA256 if key.secret else httpsig.ED25519
    if alg is not None:
        chosen["alg"] = alg
    if expires is not None:
        chosen["expires"] = expires
    chosen.update(params or {})
    inner = sfv.InnerList(tuple(sfv.Item(c, {}) for c in components), chosen)
    params_text = sfv.serialize_inner_list(inner)
    view = httpsig.RequestView(
        method, "https", authority or target.authority, path, query, {k: [v] for k, v in headers.items()}
    )
    base = httpsig.signature_base(tuple(components), params_text, view)
    with_key = target.keys[signer] if signer is not None else key
    if hmac_secret is not None:
        signature = hmac.new(hmac_secret, base, hashlib.sha256).digest()
    elif private_key is not None:
        signature = private_key.sign(base)
    elif with_key.secret is not None:
        signature = hmac.new(with_key.secret.encode(), base, hashlib.sha256).digest()
    else:
        assert with_key.private_key_path is not None
        signature = load_ed25519_private(with_key.private_key_path.read_bytes()).sign(base)
    headers["signature-input"] = f"{label}={params_text}"
    headers["signature"] = f"{label}={sfv.serialize_bare_item(signature)}"
    if body:
        headers.setdefault("content-type", "application/json")
    return headers


def send(
    target: Gateway,
    method: str,
    target_path: str,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] | dict[str, str] = (),
    *,
    source: str | None = None,
    timeout: float = 30,
) -> Response:
    """One request with exactly these field lines (plus Host and, for a body, Content-Length,
    unless given): duplicates are sent as separate lines."""
    lines = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {name.lower() for name, _ in lines}
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        target.port,
        context=target.context(),
        timeout=timeout,
        source_address=(source, 0) if source else None,
    )
    try:
        conn.putrequest(method, target_path, skip_host=True, skip_accept_encoding=True)
        if "host" not in names:
            conn.putheader("Host", target.authority)
        for name, value in lines:
            conn.putheader(name, value)
        if body and "content-length" not in names and "transfer-encoding" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    parsed = json.loads(data) if data.startswith((b"{", b"[")) else None
    return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, parsed, data)


def signed_raw(
    target: Gateway,
    who: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    *,
    headers: Sequence[tuple[str, str]] = (),
    drop: Sequence[str] = (),
    source: str | None = None,
    **signing: Any,
) -> Response:
    """Sign by hand (:func:`sign`'s options), then send with :func:`send`: ``drop`` removes
    signed headers, ``headers`` adds field lines (duplicates allowed)."""
    signed = sign(target, who, method, path, query, body, **signing)
    lines = [(k, v) for k, v in signed.items() if k not in drop]
    return send(
        target, method, path + ("?" + query if query else ""), body, [*lines, *headers], source=source
    )


def tls_socket(target: Gateway, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", target.port), timeout=timeout, source_address=(source, 0))
    return target.context().wrap_socket(raw, server_hostname="localhost")


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything until the server closes (or ``limit`` seconds without a byte)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, OSError):
        pass
    return data


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return False


def read_response(sock: socket.socket, limit: float = 5.0) -> bytes:
    """One response: until its Content-Length is in, the server closes, or ``limit`` seconds
    pass without a byte."""
    sock.settimeout(limit)
    data = b""
    try:
        while not _complete(data) and (chunk := sock.recv(65536)):
            data += chunk
    except (TimeoutError, OSError):
        pass
    return data


def parse_response(data: bytes) -> Response:
    """An HTTP/1.1 response read off a socket."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = rest[: int(headers.get("content-length", len(rest)))]
    parsed = json.loads(body) if body.startswith((b"{", b"[")) else None
    return Response(status, headers, parsed, body)


def exchange(target: Gateway, data: bytes, *, source: str = "127.0.0.1", limit: float = 5.0) -> Response:
    """Raw bytes over TLS, and the server's answer."""
    with tls_socket(target, source) as sock:
        sock.sendall(data)
        return parse_response(read_response(sock, limit))
