"""bastion scan: every planted credential in a bot repository is found; Bastion's tree is clean."""

from __future__ import annotations

import base64
import json
import secrets
import string
from pathlib import Path

from typer.testing import CliRunner

from bastion.cli import app
from bastion.crypto.keys import generate_ed25519, new_hmac_secret, new_key_id, private_key_pem

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def plant_bot_repository(root: Path) -> dict[tuple[str, int], str]:
    """A small trading bot with credentials planted in the usual places; made at run time
    so no credential-shaped string sits in Bastion's own tree.  (file, line) -> what."""
    planted: dict[tuple[str, int], str] = {}
    values: dict[str, str] = {}

    def write(name: str, lines: list[tuple[str, str | None]]) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(text for text, _ in lines) + "\n")
        for number, (_, what) in enumerate(lines, start=1):
            if what:
                planted[(name, number)] = what

    key_id, hmac_secret = new_key_id(), new_hmac_secret()
    binance_key, binance_secret = alnum(64), alnum(64)
    values.update(key_id=key_id, hmac=hmac_secret, bkey=binance_key, bsecret=binance_secret)
    write(
        "bot/config.py",
        [
            ("# Trading bot settings", None),
            (f'BINANCE_API_KEY = "{binance_key}"', "Binance API key"),
            (f'BINANCE_API_SECRET = "{binance_secret}"', "Binance API secret"),
            ('SYMBOLS = ["BTC-USD", "EUR-USD"]', None),
        ],
    )
    write(
        "bot/bastion.yaml",
        [
            ("gateway: https://127.0.0.1:8443", None),
            (f"key_id: {key_id}", "Bastion key id"),
            (f"secret: {hmac_secret}", "Bastion HMAC secret"),
        ],
    )
    ccxt_secret = base64.b64encode(secrets.token_bytes(48)).decode()
    write(
        "bot/exchanges.json",
        [
            ("{", None),
            (f'  "apiKey": "{alnum(36)}",', "ccxt apiKey"),
            (f'  "secret": "{ccxt_secret}",', "ccxt secret"),
            ('  "enableRateLimit": true', None),
            ("}", None),
        ],
    )
    write(
        ".env",
        [
            ("LOG_LEVEL=info", None),
            (
                f"KRAKEN_API_SECRET={base64.b64encode(secrets.token_bytes(64)).decode()}",
                "Kraken secret in .env",
            ),
            (
                "AWS_ACCESS_KEY_ID=AKIA"
                + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16)),
                "AWS access key",
            ),
        ],
    )
    pem = private_key_pem(generate_ed25519()).decode().strip().split("\n")
    write("keys/bot.pem", [(pem[0], "Ed25519 private key"), *[(line, None) for line in pem[1:]]])
    write(
        "bot/strategy.py",
        [
            ("def signal(prices):", None),
            ("    return sum(prices) / len(prices)", None),
        ],
    )
    (root / "planted.json").write_text(json.dumps(values))  # not scanned: written outside bot/
    return planted


def test_every_planted_credential_is_found_and_no_value_is_echoed(tmp_path: Path) -> None:
    repo = tmp_path / "bot-repo"
    planted = plant_bot_repository(repo)
    values = json.loads((repo / "planted.json").read_text())
    (repo / "planted.json").unlink()
    result = runner.invoke(app, ["scan", str(repo), "--json"])
    assert result.exit_code == 1
    findings = json.loads(result.output)["findings"]
    found = {(f["path"], f["line"]) for f in findings}
    missing = {what for place, what in planted.items() if place not in found}
    assert missing == set()
    assert not [f for f in findings if f["path"] == "bot/strategy.py"]
    for value in values.values():
        assert value not in result.output


def test_a_clean_repository_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text("def run():\n    return 42\n")
    result = runner.invoke(app, ["scan", str(tmp_path)])
    assert (result.exit_code, result.output.strip()) == (0, "no credentials found")


def test_bastions_own_tree_is_clean() -> None:
    result = runner.invoke(app, ["scan", str(ROOT)])
    assert result.exit_code == 0, result.output
