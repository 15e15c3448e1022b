"""Bastion's own detect-secrets plugins (loaded by path; see ``scan.py``).

Each reports a type and a line, never the value.
"""

from __future__ import annotations

import re

from detect_secrets.plugins.base import RegexBasedDetector


class BastionSecretDetector(RegexBasedDetector):
    """Bastion HMAC key secrets: ``bsk_`` + 43 URL-safe characters."""

    secret_type = "Bastion HMAC secret"  # pragma: allowlist secret  # noqa: S105 - a label  # nosec B105
    denylist = (re.compile(r"\bbsk_[A-Za-z0-9_-]{43}\b"),)


class BastionKeyIdDetector(RegexBasedDetector):
    """Bastion key ids (``bst_`` + 30 base62): not secret alone, but they mark where a bot
    authenticates, which is where its secret tends to sit."""

    secret_type = "Bastion key id"  # pragma: allowlist secret  # noqa: S105 - a label  # nosec B105
    denylist = (re.compile(r"\bbst_[0-9A-Za-z]{30}\b"),)


class ExchangeCredentialDetector(RegexBasedDetector):
    """Exchange API keys and secrets assigned in code or configuration: Binance-style 64
    character keys, and ccxt-style ``apiKey``/``secret``/``password`` settings."""

    secret_type = "Exchange API credential"  # pragma: allowlist secret  # noqa: S105 - a label  # nosec B105
    _name = r"(?:api[_-]?key|api[_-]?secret|secret[_-]?key|apiKey|secret|passphrase|password|private[_-]?key)"
    denylist = (
        re.compile(rf"""(?i)["']?{_name}["']?\s*[:=]\s*["']([A-Za-z0-9+/=_-]{{24,}})["']"""),
        # .env style, names with a prefix too (KRAKEN_API_SECRET=...)
        re.compile(
            rf"""(?i)^\s*(?:export\s+)?(?:[A-Z0-9]+_)*{_name}\s*=\s*["']?([A-Za-z0-9+/=_-]{{24,}})["']?\s*$"""
        ),
        re.compile(r"\b[A-Za-z0-9]{64}\b(?=.*#.*(?:binance|api))", re.IGNORECASE),
    )
