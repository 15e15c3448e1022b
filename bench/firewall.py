"""Bastion's free-text firewall against ModSecurity v3 + OWASP CRS on the same corpora.

    .venv/bin/python bench/firewall.py

Every payload is put where free text goes in Bastion's API (an order's ``label``) and judged
by Bastion's detector (``bastion.injection``) and, in process through libmodsecurity's
Python binding, by the same ModSecurity configuration the edge uses (deploy/nginx/modsecurity,
Debian's CRS 3.3.4) at paranoia levels 1 and 2.  Corpora: sqlmap's payload files, and
tests/fixtures/attacks (SQLi, XSS, command injection, path traversal); the legitimate corpus
is tests/fixtures/labels/legit.txt.  Prints a Markdown table: the share of each corpus
refused, false positives on the legitimate corpus, and CPU per check.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from libmodsecurity import ModSecurity, RulesSet, Transaction

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.edge import CRS_RULES, DEPLOY, render  # noqa: E402
from tests.test_injection import corpus, sqlmap_payloads  # noqa: E402

from bastion.injection import inspect_text  # noqa: E402

BODY = {"client_order_id": "c-1", "symbol": "GOOG", "side": "buy", "type": "market", "quantity": "1"}


def modsecurity(paranoia: int, prefix: Path) -> Callable[[str], bool]:
    for sub in ("modsec-tmp", "modsec-data"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    # The PyPI build has no GeoIP: the IP-reputation rules (910, not about payloads) stay out.
    rules_dir = prefix / "crs-rules"
    if not rules_dir.exists():
        rules_dir.mkdir()
        for rule in CRS_RULES.iterdir():
            if not rule.name.startswith("REQUEST-910"):
                (rules_dir / rule.name).symlink_to(rule)
    conf = render(
        DEPLOY / "modsecurity" / "main.conf.template",
        prefix / f"modsecurity-{paranoia}.conf",
        {
            "PREFIX": str(prefix),
            "PARANOIA": str(paranoia),
            "CRS_RULES": str(rules_dir),
            "EXCLUSIONS": str(DEPLOY / "modsecurity" / "bastion-exclusions.conf"),
        },
    )
    engine = ModSecurity()
    engine.set_log_callback(lambda _message: None)  # matches are judged from the intervention
    rules = RulesSet()
    if rules.load_from_uri(str(conf)) < 0:
        raise SystemExit(rules.get_parser_error())

    def refused(label: str) -> bool:
        body = json.dumps(BODY | {"label": label}).encode()
        tx = Transaction(engine, rules)
        tx.process_connection("127.0.0.1", 40000, "127.0.0.1", 8443)
        tx.process_uri("/v1/orders", "POST", "1.1")
        for name, value in (
            ("Host", "bastion.example"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("User-Agent", "trading-bot/1.0"),
            ("Accept", "application/json"),
            (
                "Signature-Input",
                'sig1=("@method" "@target-uri" "content-digest");created=1;keyid="bst_x";nonce="n"',
            ),
            ("Signature", "sig1=:AAAA:"),
        ):
            tx.add_request_header(name, value)
        tx.process_request_headers()
        tx.append_request_body(body)
        tx.process_request_body()
        intervention = tx.intervention()
        return intervention is not None and intervention.status >= 400

    return refused


def measure(judge: Callable[[str], bool], items: list[str]) -> tuple[int, float]:
    start = time.process_time()
    count = sum(judge(item) for item in items)
    return count, (time.process_time() - start) / max(1, len(items)) * 1e6


def main() -> None:
    corpora = {
        "sqlmap payloads (SQLi)": sqlmap_payloads(),
        "SQLi, classic": corpus("sqli_extra.txt"),
        "XSS": corpus("xss.txt"),
        "command injection": corpus("cmd.txt"),
        "path traversal": corpus("traversal.txt"),
    }
    legit = (ROOT / "tests" / "fixtures" / "labels" / "legit.txt").read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        judges: dict[str, Callable[[str], bool]] = {
            "Bastion": lambda label: inspect_text(label) is not None,
            "ModSecurity + CRS, PL1": modsecurity(1, Path(tmp)),
            "ModSecurity + CRS, PL2": modsecurity(2, Path(tmp)),
        }
        print("| corpus | payloads | " + " | ".join(judges) + " |")
        print("|---|---|" + "---|" * len(judges))
        cpu: dict[str, list[float]] = {name: [] for name in judges}
        for name, items in corpora.items():
            cells = []
            for judge_name, judge in judges.items():
                refused, us = measure(judge, items)
                cpu[judge_name].append(us)
                cells.append(f"{refused}/{len(items)} ({100 * refused / len(items):.0f} %)")
            print(f"| {name} | {len(items)} | " + " | ".join(cells) + " |")
        cells = []
        for judge_name, judge in judges.items():
            refused, us = measure(judge, legit)
            cpu[judge_name].append(us)
            cells.append(f"{refused} false positives")
        print(f"| legitimate labels | {len(legit)} | " + " | ".join(cells) + " |")
        print(
            "| CPU per check, µs (mean over all corpora) | | "
            + " | ".join(f"{sum(v) / len(v):,.1f}" for v in cpu.values())
            + " |"
        )


if __name__ == "__main__":
    main()
