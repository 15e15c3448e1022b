"""Injection detection on free text: public attack corpora refused, realistic labels passed.

Attack corpora: sqlmap's own payload files (``/usr/share/sqlmap/data/xml/payloads``, Debian's
``sqlmap``; placeholders filled in as sqlmap would) and our lists of XSS, command-injection,
path-traversal and classic SQL-injection strings (``tests/fixtures/attacks``).  The legitimate
corpus (``tests/fixtures/labels/legit.txt``) is strategy labels with apostrophes, ampersands,
percent signs, hashes and names in many scripts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.injection import MAX_LENGTH, inspect_text

FIXTURES = Path(__file__).parent / "fixtures"
SQLMAP = Path("/usr/share/sqlmap/data/xml/payloads")
_FILL = {
    "RANDNUM": "4821",
    "RANDNUM1": "4821",
    "RANDNUM2": "7734",
    "RANDNUM3": "1190",
    "RANDNUM4": "2207",
    "RANDNUM5": "3316",
    "RANDSTR": "qkzv",
    "RANDSTR1": "qkzv",
    "RANDSTR2": "pwma",
    "SLEEPTIME": "5",
    "INFERENCE": "4821=4821",
    "ORIGVALUE": "1",
    "DELIMITER_START": "qzxq",
    "DELIMITER_STOP": "qvkq",
    "GENERIC_SQL_COMMENT": "-- -",
    "SPACE_REPLACE": " ",
    "ORIGINAL": "1",
    "QUERY": "SELECT 1",
    "CHAR": "CHAR(113)",
    "UNION": "UNION ALL SELECT NULL",
}


def _fill(template: str) -> str:
    return re.sub(r"\[([A-Z0-9_]+)\]", lambda m: _FILL.get(m.group(1), "1"), template).strip()


def sqlmap_payloads() -> list[str]:
    found = set()
    for path in sorted(SQLMAP.glob("*.xml")):
        for element in ET.parse(path).iter("payload"):  # noqa: S314 - Debian's sqlmap data files
            if element.text and element.text.strip():
                found.add(_fill(element.text)[:MAX_LENGTH])
    return sorted(found)


def corpus(name: str) -> list[str]:
    return [line for line in (FIXTURES / "attacks" / name).read_text().splitlines() if line]


def test_sqlmaps_payloads_are_refused() -> None:
    payloads = sqlmap_payloads()
    if not payloads:
        pytest.skip("sqlmap's payload files are missing (scripts/system-deps.sh installs sqlmap)")
    assert len(payloads) > 200  # 219 distinct (truncated to 64 characters) in Debian 12's sqlmap 1.7.2
    passed = [p for p in payloads if inspect_text(p) is None]
    assert passed == []


@pytest.mark.parametrize("name", ["sqli_extra.txt", "xss.txt", "cmd.txt", "traversal.txt"])
def test_attack_corpora_are_refused(name: str) -> None:
    payloads = corpus(name)
    assert len(payloads) >= 20
    assert [p for p in payloads if inspect_text(p) is None] == []


def test_legitimate_labels_have_no_false_positive() -> None:
    labels = (FIXTURES / "labels" / "legit.txt").read_text().splitlines()
    assert len(labels) >= 200
    assert {label: inspect_text(label) for label in labels if inspect_text(label) is not None} == {}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "length"),
        ("x" * 65, "length"),
        (" leading", "spaces"),
        ("two  spaces", "spaces"),
        ("line\nbreak", "control"),
        ("zero\u200bwidth", "control"),
        ("bidi\u202eoverride", "control"),
        ("semi;colon", "character"),
        ('double "quote"', "character"),
        ("50%25", "percent-encoded"),
        ("a/../b", "traversal"),
        ("x && y", "chaining"),
        ("admin'--", "SQL"),
    ],
)
def test_each_layer_names_its_reason(text: str, why: str) -> None:
    reason = inspect_text(text)
    assert reason is not None and why in reason


@given(st.text(max_size=80))
def test_the_detector_never_crashes(text: str) -> None:
    reason = inspect_text(text)
    assert reason is None or isinstance(reason, str)
