"""``bastion alerts``: add each kind (a Slack-compatible sink delivering to a local receiver),
list, test, remove (recorded in the ledger), and clear errors for what cannot be done."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()
SLACK_TOKEN_PATH = "/services/T000/B000/tokenpart"  # pragma: allowlist secret - test data


def run(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--home", str(home)])
    return result.exit_code, result.output


class ChatReceiver(http.server.ThreadingHTTPServer):
    """A Slack-compatible incoming webhook: keeps every (path, JSON body) it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, dict[str, Any]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SLACK_TOKEN_PATH}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        assert isinstance(self.server, ChatReceiver)
        self.server.posts.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    assert runner.invoke(app, ["init", "--home", str(path)]).exit_code == 0
    config = path / "bastion.toml"
    text = config.read_text()
    assert "allowed_private_networks = []" in text
    config.write_text(
        text.replace("allowed_private_networks = []", 'allowed_private_networks = ["127.0.0.1/32"]')
    )
    return path


@pytest.fixture
def chat() -> Iterator[ChatReceiver]:
    receiver = ChatReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        receiver.shutdown()


def test_a_slack_sink_is_added_listed_tested_and_removed(home: Path, chat: ChatReceiver) -> None:
    code, out = run(home, "alerts", "add", "--slack", chat.url, "--allow-private-network", "--json")
    assert code == 0, out
    added = json.loads(out)
    assert added["kind"] == "slack" and "secret" not in added  # only webhooks sign
    assert "tokenpart" not in out  # the URL's path is its token: never shown

    code, out = run(home, "alerts", "list", "--json")
    sinks = json.loads(out)["sinks"]
    assert [(s["id"], s["kind"]) for s in sinks] == [(added["id"], "slack")]
    assert "tokenpart" not in out

    code, out = run(home, "alerts", "test", "--json")
    assert code == 0, out
    results = json.loads(out)["results"]
    assert all(r["ok"] for r in results) and any(r["sink"].startswith("slack") for r in results)
    ((path, body),) = chat.posts
    assert path == SLACK_TOKEN_PATH and set(body) == {"text"} and "alerts.test" in body["text"]

    code, out = run(home, "alerts", "remove", added["id"], "--json")
    assert code == 0 and json.loads(out) == {"removed": added["id"]}
    assert json.loads(run(home, "alerts", "list", "--json")[1])["sinks"] == []
    with sqlite3.connect(home / "bastion.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM ledger_entries ORDER BY idx")]
        (stored,) = db.execute("SELECT count(*) FROM alert_sinks").fetchone()
    assert stored == 0
    removed = [e["data"] for e in bodies if e["kind"] == "alerts.sink_removed"]
    assert len(removed) == 1 and removed[0]["sink_id"] == added["id"] and removed[0]["actor"]
    # nothing left to send to: a test now reaches only the log
    assert run(home, "alerts", "test", "--json")[0] == 0
    assert len(chat.posts) == 1


def test_removing_an_unknown_sink_is_a_clear_error(home: Path) -> None:
    code, out = run(home, "alerts", "remove", "snk_nope")
    assert code == 2 and "no alert sink snk_nope" in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of"),
        (["--webhook", "https://a.example/h", "--slack", "https://b.example/s"], "exactly one of"),
        (["--email", "ops@example.com"], "--email needs --smtp"),
        (["--email", "ops@example.com", "--smtp", "mail.example"], "HOST:PORT"),
        (["--email", "ops@example.com", "--smtp", "mail.example:²"], "HOST:PORT"),
        (["--email", "ops@example.com", "--smtp", "mail.example:0"], "HOST:PORT"),
        (["--email", "ops@example.com", "--smtp", "mail.example:70000"], "HOST:PORT"),
        (["--slack", "http://127.0.0.1:9/hook"], "127.0.0.1"),  # private, without the flag
    ],
)
def test_bad_sinks_are_refused_with_a_reason(home: Path, args: list[str], message: str) -> None:
    code, out = run(home, "alerts", "add", *args)
    assert code == 2, out
    assert message in out and "Traceback" not in out
    assert json.loads(run(home, "alerts", "list", "--json")[1])["sinks"] == []
