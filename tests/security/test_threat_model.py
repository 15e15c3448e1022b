"""docs/threat-model.md names, for every threat, the test that covers it: each must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_threat_names_a_test_and_each_named_test_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    section = text.split("## Threats, controls, tests", 1)[1].split("\n## ", 1)[0]
    table = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| threat")
    ]
    rows = [line for line in table if not set(line) <= {"|", "-", " "}]
    assert len(rows) >= 30  # the threats table, not a stub
    missing = []
    for row in rows:
        found = NAMED.findall(row)
        assert found, f"a threat without a test: {row[:80]}"
        for file, name in found:
            path = ROOT / file
            if not path.is_file() or name not in _tests_in(path):
                missing.append(f"{file}::{name}")
    assert missing == []
