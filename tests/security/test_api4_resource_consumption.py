"""OWASP API4:2023 Unrestricted Resource Consumption, against a real server.

Requests built to cost the gateway memory, CPU or connections: bodies far over the cap
(declared, chunked, just over), deep JSON nesting, huge numbers and exponents, page sizes
and query strings beyond their limits, long symbols, a key over its rate, a slow body, and
at the connection: too many connections from one address, header floods and long URLs.
Each is refused cheaply with its documented answer; refusals after the connection is
accepted are in the ledger, those at the connection (``503 TOO_MANY_CONNECTIONS``, ``431``,
``414``) are counted only (docs/shield.md), and nothing changes.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from tests.security.conftest import (
    ORDER,
    Target,
    assert_cut,
    assert_refused,
    exchange,
    ledger_size,
    parse_response,
    read_response,
    signed_raw,
    tls_socket,
    unchanged,
)

pytestmark = pytest.mark.e2e
CAP = 65_536  # server.max_body_bytes


def order_bytes(**change: object) -> bytes:
    return json.dumps(dict(ORDER, client_order_id=f"rc-{time.time_ns() % 10**12}") | change).encode()


def head(target: Target, method: str, path: str, *lines: str) -> bytes:
    return "".join(
        [f"{method} {path} HTTP/1.1\r\n", f"Host: {target.authority}\r\n", *lines, "\r\n"]
    ).encode()


def test_a_huge_declared_body_is_refused_without_being_read(target: Target) -> None:
    with unchanged(target):
        for declared in (CAP + 1, 10**9, 10**18):
            started = time.monotonic()
            lines = ("content-type: application/json\r\n", f"content-length: {declared}\r\n")
            response = exchange(target, head(target, "POST", "/v1/orders", *lines) + b'{"a": 1')
            assert time.monotonic() - started < 1.5  # answered at once: nothing was waited for
            assert_refused(response, 413, "PAYLOAD_TOO_LARGE", "firewall", reason="body over the size cap")


def test_bodies_over_the_cap_are_413(target: Target) -> None:
    with unchanged(target):
        # signed, one byte over the cap
        padded = order_bytes(label="x")
        padded = padded[:-1] + b" " * (CAP + 1 - len(padded)) + b"}"
        assert len(padded) == CAP + 1
        response = signed_raw(target, "alice", "POST", "/v1/orders", body=padded)
        assert_refused(response, 413, "PAYLOAD_TOO_LARGE", "firewall")
        # chunked, with no Content-Length: reading stops at the cap
        chunk = b"8000\r\n" + b" " * 0x8000 + b"\r\n"
        lines = ("content-type: application/json\r\n", "transfer-encoding: chunked\r\n")
        response = exchange(target, head(target, "POST", "/v1/orders", *lines) + chunk * 3)
        assert_refused(response, 413, "PAYLOAD_TOO_LARGE", "firewall")
        # a body on a route that takes none, and a non-numeric length
        response = signed_raw(target, "alice", "GET", "/v1/account", body=b"{}")
        assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="body on a route that takes none")
        lines = ("content-type: application/json\r\n", "content-length: 1e9\r\n")
        response = exchange(target, head(target, "POST", "/v1/orders", *lines))
        assert response.status == 400  # refused by the HTTP parser before any route


def test_deep_json_nesting_is_refused_quickly(target: Target) -> None:
    depth = 30_000  # 60 kB of brackets: under the cap
    bodies = [
        b"[" * depth + b"]" * depth,
        b'{"a": ' + b"[" * depth + b"]" * depth + b"}",
        b'{"label": ' + b'{"a": ' * (depth // 6) + b"1" + b"}" * (depth // 6) + b"}",
        order_bytes()[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}",
    ]
    with unchanged(target):
        for body in bodies:
            assert len(body) <= CAP
            started = time.monotonic()
            response = signed_raw(target, "alice", "POST", "/v1/orders", body=body)
            assert time.monotonic() - started < 1.5
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="body:")


def test_huge_numbers_and_exponents_are_refused(target: Target) -> None:
    as_strings = ["1e999999", "1E+400", "9" * 400, "1" + "0" * 40, "0." + "0" * 400 + "1", "Infinity", "NaN"]
    as_numbers = [b"1e999999", b"1" + b"0" * 5000, b"-1e-999999", b"1" + b"0" * 60000]
    with unchanged(target):
        for value in as_strings:
            for field in ("quantity", "price"):
                response = signed_raw(
                    target, "alice", "POST", "/v1/orders", body=order_bytes(**{field: value})
                )
                assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=f"$.{field}")
        for number in as_numbers:
            body = order_bytes().replace(b'"1.00"', number)
            assert len(body) <= CAP
            response = signed_raw(target, "alice", "POST", "/v1/orders", body=body)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="$.price")


def test_page_sizes_and_query_strings_beyond_their_limits(target: Target) -> None:
    cases = [
        ("/v1/orders", "limit=100000", "<= 500"),
        ("/v1/orders", "limit=501", "<= 500"),
        ("/v1/orders", "limit=0", ">= 1"),
        ("/v1/orders", "limit=-1", ">= 1"),
        ("/v1/orders", "limit=" + "9" * 400, "<= 500"),
        ("/v1/orders", "limit=1e3", "not written as digits"),
        ("/v1/orders", "&".join(f"p{n}=1" for n in range(17)), "malformed query string"),
        ("/v1/orders", "&".join(["status=all"] * 16), "query parameter repeated"),
        ("/v1/orders", "limit=%zz", "malformed percent-encoding"),
        ("/v1/ledger/consistency", f"first=1&second={10**400}", "<= 4611686018427387904"),
        ("/v1/ledger/consistency", f"first=0&second={2**62}", ">= 1"),
        ("/v1/ledger/entries/0/proof", f"tree_size={2**63}", "<= 4611686018427387904"),
    ]
    with unchanged(target) as watch:
        for path, query, reason in cases:
            response = target.call("alice", "GET", path, query=query)
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason=reason)
        largest = watch.allow(target.call("alice", "GET", "/v1/orders", query="limit=500"))
        assert largest.status == 200  # the documented maximum itself is fine


def test_long_and_many_symbols_are_refused(target: Target) -> None:
    with unchanged(target):
        for symbol in ("A" * 13, "GOOG-" + "A" * 13, "A" * 300, ",".join(["GOOG"] * 50), "GOOG-USD-EUR"):
            response = target.call("alice", "GET", "/v1/orders", query=f"symbol={symbol}")
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="$.symbol")
            response = signed_raw(target, "alice", "POST", "/v1/orders", body=order_bytes(symbol=symbol))
            assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="$.symbol")
            response = target.call("alice", "GET", f"/v1/markets/{symbol}/ticker")
            assert_refused(response, 404, "NOT_FOUND", "firewall", reason="path parameter symbol malformed")
        response = signed_raw(target, "alice", "POST", "/v1/orders", body=order_bytes(label="a" * 65))
        assert_refused(response, 400, "BAD_REQUEST", "firewall", reason="$.label")


def test_a_key_over_its_rate_is_429_with_retry_after(target: Target) -> None:
    """alice_slow's policy allows 0.2 requests a second with a burst of 2 (one markets call,
    which weighs 2): the calls after it are refused until the bucket refills."""
    first = target.call("alice_slow", "GET", "/v1/markets")
    assert first.status in (200, 429)
    with unchanged(target):
        for _ in range(5):
            response = target.call("alice_slow", "GET", "/v1/markets")
            entry = assert_refused(response, 429, "RATE_LIMITED", "ratelimit", reason="over the limit of k:")
            assert entry["key_id"] == target.keys["alice_slow"].key_id
            assert int(response.headers["retry-after"]) >= 1
            assert (
                response.headers["ratelimit-remaining"] == "0" and response.headers["ratelimit-limit"] == "2"
            )


def test_expensive_signatures_are_refused_before_any_crypto(target: Target) -> None:
    """Many covered components, a huge signature, a huge nonce: refused by the parser."""
    components = ["@method", "@target-uri", *[f"x-c{n}" for n in range(15)]]
    covered = {f"x-c{n}": "v" for n in range(15)}
    with unchanged(target):
        response = signed_raw(
            target, "alice", "GET", "/v1/account", components=components, covered_headers=covered
        )
        assert_refused(response, 401, "AUTHENTICATION_FAILED", "authn", reason="too many covered components")
        response = signed_raw(target, "alice", "GET", "/v1/account", lead={"pad": "p" * 9000})
        assert_refused(response, 401, "AUTHENTICATION_FAILED", "authn", reason="malformed signature field")
        response = signed_raw(target, "alice", "GET", "/v1/account", nonce="n" * 5000)
        assert_refused(response, 401, "AUTHENTICATION_FAILED", "authn")


def test_a_slow_body_is_408(target: Target) -> None:
    """shield.body_timeout_seconds is 2 s on this server (10 s shipped)."""
    with unchanged(target):
        lines = ("content-type: application/json\r\n", "content-length: 200\r\n")
        started = time.monotonic()
        response = exchange(target, head(target, "POST", "/v1/orders", *lines) + b"{", limit=6)
        assert 1.5 < time.monotonic() - started < 5
        assert_refused(response, 408, "REQUEST_TIMEOUT", "shield", reason="body not received in time")


def test_too_many_connections_from_one_address_are_cut(target: Target) -> None:
    """shield.max_connections_per_ip (64): the 65th connection from 127.0.0.77 is answered 503
    and closed at once, while other addresses are served; nothing reaches the ledger."""
    with unchanged(target) as watch:
        before = ledger_size(target)
        held = [tls_socket(target, "127.0.0.77") for _ in range(64)]
        try:
            with tls_socket(target, "127.0.0.77") as extra:
                started = time.monotonic()
                answer = parse_response(read_response(extra, 3))
                assert time.monotonic() - started < 1
            assert_cut(answer, 503, "TOO_MANY_CONNECTIONS")
            served = watch.allow(target.call("alice", "GET", "/v1/account", source="127.0.0.78"))
            assert served.status == 200
        finally:
            for sock in held:
                with contextlib.suppress(OSError):
                    sock.close()
        assert ledger_size(target) == before + 1  # only the other address's request
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the address is served again once its connections close
        if target.call("alice", "GET", "/v1/account", source="127.0.0.77").status == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("127.0.0.77 was not served again after closing its connections")


def test_header_floods_and_long_urls_are_cut_at_the_connection(target: Target) -> None:
    with unchanged(target):
        before = ledger_size(target)
        many = [f"x-h{n}: v\r\n" for n in range(65)]  # shield.max_header_count is 64
        assert_cut(exchange(target, head(target, "GET", "/v1/account", *many)), 431, "HEADERS_TOO_LARGE")
        big = [f"x-big: {'a' * 17_000}\r\n"]  # shield.max_header_bytes is 16 KiB
        assert_cut(exchange(target, head(target, "GET", "/v1/account", *big)), 431, "HEADERS_TOO_LARGE")
        spread = [f"x-s{n}: {'b' * 500}\r\n" for n in range(40)]  # 40 headers, 20 kB together
        assert_cut(exchange(target, head(target, "GET", "/v1/account", *spread)), 431, "HEADERS_TOO_LARGE")
        signature = [f"signature: bastion=:{'A' * 20_000}:\r\n"]
        assert_cut(exchange(target, head(target, "GET", "/v1/account", *signature)), 431, "HEADERS_TOO_LARGE")
        long_path = "/v1/orders/" + "a" * 3000  # shield.max_url_bytes is 2 KiB
        assert_cut(exchange(target, head(target, "GET", long_path)), 414, "URL_TOO_LONG")
        long_query = "/v1/orders?symbol=" + "A" * 3000
        assert_cut(exchange(target, head(target, "GET", long_query)), 414, "URL_TOO_LONG")
        assert ledger_size(target) == before  # floods are counted, not recorded


def test_a_refused_body_does_not_hold_the_connection(target: Target) -> None:
    lines = ("content-type: application/json\r\n", f"content-length: {10**9}\r\n")
    with tls_socket(target, "127.0.0.79") as sock:
        sock.sendall(head(target, "POST", "/v1/orders", *lines) + b"{")
        assert b" 413 " in read_response(sock, 3)
        closed_after = None
        started = time.monotonic()
        while time.monotonic() - started < 6:  # past the header deadline and the keep-alive timeout
            try:
                sock.sendall(b" ")
                sock.settimeout(0.5)
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "the connection was still open after 6 s of trickling"
