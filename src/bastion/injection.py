"""Injection detection for the few fields that carry free text (order labels, key labels,
later alert-sink names).  Framework-free; used by the firewall stage and the CLI.

Layered, cheapest first; the first layer that refuses names the reason:

1. **length and characters** (the positive model): 1–64 characters of letters, digits and
   combining marks of any script, the space, and ``- _ . , : ( ) # + @ ' & / % ! ?``.  Control and format
   characters (zero-width, bidirectional overrides), quotes other than the apostrophe,
   ``; | ` $ < > { } [ ] \\ = * ^ ~`` and line breaks never pass, which alone stops most
   command, template and markup payloads;
2. **encodings and traversal**: percent-encoded bytes (``%0a``, ``%2e``), ``..`` next to a
   slash, and well-known system paths;
3. **command chaining**: ``&&``, and ``&`` followed by a command name (``buy & hold`` passes);
4. **SQL and script shapes** that libinjection lets through on short text: SQL functions
   used for timing and error channels (``SLEEP(``, ``CONVERT(``), sub-selects, ``UNION …
   SELECT``, ``WAITFOR DELAY``, a quote followed by a comment, ``javascript:``-like schemes;
5. **libinjection** (the ``libinjection-python`` binding of the maintained C library) for SQL
   injection and XSS, on the text as given.

What it refuses and what it lets through is measured on public attack corpora and a corpus
of realistic labels in ``tests/test_injection.py`` and docs/security-testing.md.
"""

from __future__ import annotations

import re
import unicodedata

import libinjection

MAX_LENGTH = 64
_PUNCTUATION = frozenset(" -_.,:()#+@'&/%!?")
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_TRAVERSAL = re.compile(r"\.\.[/\\]|[/\\]\.\.|(?:^|/)(?:etc|proc|bin|usr|dev|windows|boot)/", re.IGNORECASE)
_COMMANDS = (
    "whoami|id|uname|ping|curl|wget|nc|ncat|netcat|sh|bash|zsh|cmd|powershell|cat|type|ls|dir|echo"
    "|sleep|timeout|rm|del|nslookup|dig|ifconfig|ipconfig|net|python|perl|ruby|php|sudo|chmod|kill"
)
_SQL = re.compile(
    r"\b(?:sleep|benchmark|pg_sleep|convert|concat|char|elt|json_keys|extractvalue|updatexml|substring"
    r"|ascii|cast)\s*\(|\(\s*select\b|\bselect\b.+\bfrom\b|\bunion\b.+\bselect\b|\bwaitfor\s+delay\b"
    r"|'\s*(?:#|--)",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"\b(?:javascript|vbscript|data|file)\s*:", re.IGNORECASE)
_CHAINED = re.compile(rf"&&|&\s*(?:{_COMMANDS})\b", re.IGNORECASE)


def inspect_text(value: str) -> str | None:
    """Why ``value`` is refused as free text, or None when it passes."""
    if not 1 <= len(value) <= MAX_LENGTH:
        return f"length must be 1..{MAX_LENGTH}"
    if value != value.strip() or "  " in value:
        return "leading, trailing or repeated spaces"
    for char in value:
        kind = unicodedata.category(char)[0]
        if kind == "C":
            return "control or format character"
        if kind not in "LNM" and char not in _PUNCTUATION:  # letters, digits, combining marks
            return "character not allowed"
    if _ENCODED.search(value):
        return "percent-encoded byte"
    if _TRAVERSAL.search(value):
        return "path traversal"
    if _CHAINED.search(value):
        return "command chaining"
    if _SQL.search(value):
        return "SQL injection"
    if _SCHEME.search(value):
        return "cross-site scripting"
    if libinjection.is_sql_injection(value)["is_sqli"]:
        return "SQL injection"
    if libinjection.is_xss(value)["is_xss"]:
        return "cross-site scripting"
    return None
