"""OWASP API Security Top 10 (2023), API7: server-side request forgery.

The only outbound connections Bastion makes to addresses an operator configures are alert
sinks (webhooks, Slack, SMTP); there are no venue URLs in configuration yet (the paper venue is
in-process), so the sinks are the whole attack surface here.  Each attack asks
``bastion alerts add`` to point a sink inside the network: loopback, private, link-local and
metadata addresses, IPv4 wrapped in IPv6, legacy numeric IPv4 forms, a name that resolves to
loopback, user-information tricks, other schemes, and a redirect from an allowed receiver to
another loopback address.  Each refusal exits 2 with a message that names the host and the
reason (never the URL's path, where webhook tokens live), stores no sink (``alerts list``), and
contacts nothing: a listener on loopback, whose port every loopback target names, gets no
connection, and ``alerts test`` afterwards reaches only the log.

No test reaches the internet: every target is loopback or a literal address refused before any
connection, and the only name resolved is ``localhost`` (from /etc/hosts).
"""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app as cli_app
from bastion.errors import BastionError
from tests.e2e.conftest import cli

pytestmark = pytest.mark.e2e

TOKEN = "SECRETTOKEN0123456789"  # in every webhook path: it must never be echoed back


def bastion(home: Path, *args: str) -> tuple[int, str, str]:
    """``bastion ARGS --home HOME`` in this process: the same commands and exit codes (a
    BastionError exits 2, as ``bastion.cli.main`` makes it) without a 1.7 s interpreter start."""
    result = CliRunner().invoke(cli_app, [*args, "--home", str(home)])
    code = 2 if isinstance(result.exception, BastionError) else result.exit_code
    return code, result.stdout, result.stderr


def last_json(out: str) -> dict[str, Any]:
    """The command's JSON: its last line (alerts to the log sink are printed before it)."""
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


class Counting(http.server.ThreadingHTTPServer):
    """An HTTP listener that counts every connection it accepts (before reading a byte) and
    answers each request with ``status`` (and ``location`` for redirects)."""

    daemon_threads = True

    def __init__(self, host: str, status: int = 204, location: str = "") -> None:
        super().__init__((host, 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self.status = status
        self.location = location
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        server = self.server
        assert isinstance(server, Counting)
        server.requests.append(("POST", self.path))
        self.send_response(server.status)
        if server.location:
            self.send_header("Location", server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class Rig:
    home: Path
    canary: Counting  # on 127.0.0.1: every loopback target below names its port


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("api7-home")
    assert bastion(home, "init")[0] == 0
    # Private networks an operator might allow: a metadata address inside one stays refused.
    config = home / "bastion.toml"
    config.write_text(
        config.read_text().replace(
            "allowed_private_networks = []", 'allowed_private_networks = ["169.254.0.0/16", "fd00::/8"]'
        )
    )
    canary = Counting("127.0.0.1")
    try:
        yield Rig(home, canary)
    finally:
        canary.shutdown()
        canary.server_close()


def _sinks(home: Path) -> list[dict[str, Any]]:
    code, out, err = bastion(home, "alerts", "list", "--json")
    assert code == 0, err
    sinks: list[dict[str, Any]] = last_json(out)["sinks"]
    return sinks


def _sink_entries(home: Path) -> list[str]:
    """The ledger's alert-sink events (``alerts.sink_added``, ``alerts.sink_removed``)."""
    with sqlite3.connect(home / "bastion.db") as db:
        rows = db.execute("SELECT body FROM ledger_entries ORDER BY idx").fetchall()
    kinds = [json.loads(body)["kind"] for (body,) in rows]
    return [kind for kind in kinds if kind.startswith("alerts.")]


def _assert_refused_and_nothing_contacted(rig: Rig, args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    code, out, err = bastion(rig.home, "alerts", "add", *args)
    assert code == 2, (code, out, err)
    assert err.startswith("error: "), err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert TOKEN not in err + out  # the path (a token) is never echoed
    assert "secret" not in out  # no signing secret was issued
    assert _sinks(rig.home) == []
    assert _sink_entries(rig.home) == []
    # Nothing to send to: a test alert reaches the log only, and the canary saw nobody.
    code, out, err = bastion(rig.home, "alerts", "test", "--json")
    assert code == 0, err
    assert [r["sink"] for r in last_json(out)["results"]] == ["log"]
    assert rig.canary.connections == 0


# {port}: the canary's port (so a connection to any loopback spelling would be seen);
# {path}: a path and query holding TOKEN.
NO_FLAG = "and this sink does not allow private targets"
METADATA = "is refused: it is a cloud metadata address"
WEBHOOKS = [
    # loopback, in every spelling
    pytest.param(
        "https://127.0.0.1:{port}{path}", ("127.0.0.1 is refused: loopback", NO_FLAG), id="loopback"
    ),
    pytest.param("http://127.0.0.1:{port}{path}", ("http:// to 127.0.0.1 is refused",), id="loopback-http"),
    pytest.param("https://127.9.9.9:{port}{path}", ("127.9.9.9 is refused: loopback",), id="loopback-127/8"),
    pytest.param("https://[::1]:{port}{path}", ("::1 is refused: loopback",), id="loopback-ipv6"),
    pytest.param("https://0.0.0.0:{port}{path}", ("0.0.0.0 is refused: unspecified",), id="unspecified"),
    pytest.param("https://[::]:{port}{path}", (":: is refused: unspecified",), id="unspecified-ipv6"),
    # private, shared and link-local ranges
    pytest.param("https://10.0.0.1{path}", ("10.0.0.1 is refused: private (RFC 1918)", NO_FLAG), id="10/8"),
    pytest.param(
        "https://192.168.1.1{path}", ("192.168.1.1 is refused: private (RFC 1918)",), id="192.168/16"
    ),
    pytest.param("https://172.16.0.1{path}", ("172.16.0.1 is refused: private (RFC 1918)",), id="172.16/12"),
    pytest.param("https://172.31.255.254{path}", ("172.31.255.254 is refused: private",), id="172.31/16"),
    pytest.param("https://100.64.0.1{path}", ("100.64.0.1 is refused: shared address space",), id="cgnat"),
    pytest.param(
        "https://169.254.1.1{path}", ("169.254.1.1 is refused: link-local", NO_FLAG), id="link-local"
    ),
    pytest.param("https://[fe80::1]{path}", ("fe80::1 is refused: link-local",), id="link-local-ipv6"),
    pytest.param("https://[fd00::1]{path}", ("fd00::1 is refused: unique-local",), id="unique-local"),
    # cloud metadata
    pytest.param(
        "https://169.254.169.254/latest/meta-data/{path}", ("169.254.169.254 " + METADATA,), id="metadata"
    ),
    pytest.param("https://[fd00:ec2::254]/latest/{path}", ("fd00:ec2::254 " + METADATA,), id="metadata-ipv6"),
    pytest.param("https://100.100.100.200{path}", ("100.100.100.200 " + METADATA,), id="metadata-alibaba"),
    # IPv4 wrapped in IPv6
    pytest.param(
        "https://[::ffff:127.0.0.1]:{port}{path}", ("it wraps 127.0.0.1, which is loopback",), id="mapped"
    ),
    pytest.param("https://[0:0:0:0:0:ffff:7f00:1]:{port}{path}", ("it wraps 127.0.0.1",), id="mapped-long"),
    pytest.param("https://[::ffff:169.254.169.254]{path}", (METADATA,), id="mapped-metadata"),
    pytest.param("https://[64:ff9b::7f00:1]:{port}{path}", ("it wraps 127.0.0.1",), id="nat64"),
    pytest.param("https://[2002:7f00:1::]:{port}{path}", ("it wraps 127.0.0.1",), id="6to4"),
    # legacy numeric IPv4 forms that resolvers would turn into 127.0.0.1
    pytest.param("http://2130706433:{port}{path}", ("host 2130706433 is not a canonical IP",), id="decimal"),
    pytest.param("http://0x7f000001:{port}{path}", ("host 0x7f000001 is not a canonical IP",), id="hex"),
    pytest.param("http://0177.0.0.1:{port}{path}", ("host 0177.0.0.1 is not a canonical IP",), id="octal"),
    pytest.param("https://127.1:{port}{path}", ("host 127.1 is not a canonical IP",), id="short"),
    pytest.param("https://0x7f.1:{port}{path}", ("host 0x7f.1 is not a canonical IP",), id="hex-short"),
    pytest.param("https://127.000.000.001:{port}{path}", ("is not a canonical IP",), id="zero-padded"),
    pytest.param("https://%31%32%37.0.0.1:{port}{path}", ("is not a valid host name",), id="percent-encoded"),
    pytest.param(
        "https://\u2460\u2461\u2466.0.0.1:{port}{path}", ("127.0.0.1 is refused: loopback",), id="idn"
    ),
    # a name that resolves to loopback (from /etc/hosts: no DNS query leaves the host)
    pytest.param(
        "https://localhost:{port}{path}", ("host localhost resolves to", "loopback"), id="localhost"
    ),
    # user information and parser confusion
    pytest.param(
        "https://hooks.example.com@127.0.0.1:{port}{path}", ("with user information",), id="userinfo"
    ),
    pytest.param(
        "https://user:pass@127.0.0.1:{port}{path}",  # pragma: allowlist secret
        ("with user information",),
        id="userinfo-password",
    ),
    pytest.param(
        "https://127.0.0.1:{port}%2f@hooks.example.com{path}",  # pragma: allowlist secret
        ("with user information",),
        id="userinfo-enc",
    ),
    pytest.param(
        "https://127.0.0.1:{port}#@hooks.example.com{path}", ("127.0.0.1 is refused",), id="fragment"
    ),
    pytest.param("https://hooks.example.com\\@127.0.0.1:{port}{path}", ("cannot be parsed",), id="backslash"),
    # other schemes
    pytest.param("file:///etc/passwd?{path}", ("URL scheme 'file' is refused",), id="file"),
    pytest.param("gopher://127.0.0.1:{port}/_{path}", ("URL scheme 'gopher' is refused",), id="gopher"),
]


def _url(template: str, rig: Rig) -> str:
    return template.format(port=rig.canary.port, path=f"/hooks/{TOKEN}?token={TOKEN}")


@pytest.mark.parametrize(("template", "expected"), WEBHOOKS)
def test_api7_webhook_to_an_internal_target_is_refused(
    rig: Rig, template: str, expected: tuple[str, ...]
) -> None:
    _assert_refused_and_nothing_contacted(rig, ("--webhook", _url(template, rig)), expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            "https://127.0.0.1:{port}/services/{path}", ("127.0.0.1 is refused: loopback",), id="loopback"
        ),
        pytest.param("https://169.254.169.254/services/{path}", (METADATA,), id="metadata"),
        pytest.param(
            "https://[::ffff:10.0.0.1]/services/{path}", ("it wraps 10.0.0.1",), id="mapped-private"
        ),
    ],
)
def test_api7_slack_sink_to_an_internal_target_is_refused(
    rig: Rig, template: str, expected: tuple[str, ...]
) -> None:
    _assert_refused_and_nothing_contacted(rig, ("--slack", _url(template, rig)), expected)


@pytest.mark.parametrize(
    ("server", "flag", "expected"),
    [
        pytest.param("127.0.0.1:25", (), ("127.0.0.1 is refused: loopback", NO_FLAG), id="loopback-25"),
        pytest.param("127.0.0.1:{port}", (), ("127.0.0.1 is refused: loopback",), id="loopback-canary"),
        pytest.param("localhost:{port}", (), ("host localhost resolves to", "loopback"), id="localhost"),
        pytest.param("[::1]:{port}", (), ("::1 is refused: loopback",), id="loopback-ipv6"),
        pytest.param("2130706433:{port}", (), ("host 2130706433 is not a canonical IP",), id="decimal"),
        pytest.param("10.0.0.25:25", (), ("10.0.0.25 is refused: private (RFC 1918)",), id="private"),
        pytest.param("169.254.169.254:25", ("--allow-private-network",), (METADATA,), id="metadata-allowed"),
        pytest.param(
            "10.0.0.25:25",
            ("--allow-private-network",),
            ("it is not in the allowed networks",),
            id="flag-only",
        ),
    ],
)
def test_api7_smtp_sink_to_an_internal_target_is_refused(
    rig: Rig, server: str, flag: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    smtp = server.format(port=rig.canary.port)
    args = ("--email", "ops@example.com", "--smtp", smtp, *flag)
    _assert_refused_and_nothing_contacted(rig, args, expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Metadata is refused whatever is allowed: here 169.254.0.0/16 and fd00::/8 are allowed.
        pytest.param("https://169.254.169.254/latest/{path}", (METADATA,), id="metadata"),
        pytest.param("https://[fd00:ec2::254]/latest/{path}", (METADATA,), id="metadata-ipv6"),
        pytest.param("https://169.254.170.2/v2/credentials/{path}", (METADATA,), id="ecs-credentials"),
        # The flag alone opens nothing: these networks are not allowed.
        pytest.param("https://127.0.0.1:{port}{path}", ("is not in the allowed networks",), id="loopback"),
        pytest.param("https://10.0.0.1{path}", ("is not in the allowed networks",), id="private"),
        pytest.param("https://192.168.0.10{path}", ("is not in the allowed networks",), id="private-192"),
        # plain http:// to an address outside the allowed networks
        pytest.param("http://127.0.0.1:{port}{path}", ("plain http:// is only allowed",), id="plain-http"),
    ],
)
def test_api7_allow_private_network_does_not_open_metadata_or_other_networks(
    rig: Rig, template: str, expected: tuple[str, ...]
) -> None:
    args = ("--webhook", _url(template, rig), "--allow-private-network")
    _assert_refused_and_nothing_contacted(rig, args, expected)


def test_api7_the_refusal_is_the_real_cli_exit_code(rig: Rig) -> None:
    """The same refusal through a real ``bastion`` process: exit 2 and the message on stderr."""
    result = cli(
        rig.home,
        "alerts",
        "add",
        "--webhook",
        _url("https://[::ffff:127.0.0.1]:{port}{path}", rig),
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "it wraps 127.0.0.1, which is loopback" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert _sinks(rig.home) == [] and rig.canary.connections == 0


# -- redirects --------------------------------------------------------------------------------
@dataclass
class Redirect:
    home: Path
    receiver: Counting  # 127.0.0.1: allowed explicitly, answers with a redirect
    trap: Counting  # 127.0.0.2: where the redirect points; must never be reached


@pytest.fixture(scope="module")
def redirect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redirect]:
    home = tmp_path_factory.mktemp("api7-redirect")
    assert bastion(home, "init")[0] == 0
    config = home / "bastion.toml"
    config.write_text(
        config.read_text().replace(
            "allowed_private_networks = []", 'allowed_private_networks = ["127.0.0.1/32"]'
        )
    )
    trap = Counting("127.0.0.2")
    receiver = Counting("127.0.0.1", status=302, location=f"http://127.0.0.2:{trap.port}/stolen/{TOKEN}")
    try:
        yield Redirect(home, receiver, trap)
    finally:
        for server in (receiver, trap):
            server.shutdown()
            server.server_close()


def test_api7_the_redirect_target_itself_is_refused_as_a_sink(redirect: Redirect) -> None:
    """Only 127.0.0.1/32 is allowed: the redirect's target, 127.0.0.2, cannot be a sink either."""
    url = f"http://127.0.0.2:{redirect.trap.port}/stolen/{TOKEN}"
    code, out, err = bastion(redirect.home, "alerts", "add", "--webhook", url, "--allow-private-network")
    assert code == 2, (code, out, err)
    assert "127.0.0.2 is refused: plain http:// is only allowed to an address in the allowed networks" in err
    assert TOKEN not in err + out
    tls = f"https://127.0.0.2:{redirect.trap.port}/stolen/{TOKEN}"
    code, out, err = bastion(redirect.home, "alerts", "add", "--webhook", tls, "--allow-private-network")
    assert code == 2, (code, out, err)
    assert "127.0.0.2 is refused: loopback, and it is not in the allowed networks" in err
    assert TOKEN not in err + out
    assert _sinks(redirect.home) == [] and redirect.trap.connections == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_api7_a_redirect_from_an_allowed_receiver_is_not_followed(redirect: Redirect, status: int) -> None:
    home, receiver, trap = redirect.home, redirect.receiver, redirect.trap
    receiver.status = status
    if not _sinks(home):
        added = bastion(
            home,
            "alerts",
            "add",
            "--webhook",
            f"http://127.0.0.1:{receiver.port}/hook",
            "--allow-private-network",
        )
        assert added[0] == 0, added
    posts = len(receiver.requests)
    code, out, err = bastion(home, "alerts", "test", "--json")
    assert code == 1, (code, out, err)  # the webhook failed: it answered a redirect
    results = {r["sink"]: r for r in last_json(out)["results"]}
    webhook = results[f"webhook http://127.0.0.1:{receiver.port}/…"]
    assert not webhook["ok"]
    assert webhook["error"].endswith(f"answered HTTP {status}; redirects are not followed")
    assert TOKEN not in out + err  # the Location (with its token) is not repeated either
    assert len(receiver.requests) == posts + 1  # one POST, not retried
    assert trap.connections == 0 and trap.requests == []
