"""Who is calling and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """Bot scopes.  Withdrawals and account-security changes deliberately have no scope."""

    READ = "read"
    TRADE = "trade"
    CANCEL = "cancel"


def parse_scopes(text: str) -> frozenset[Scope]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError("at least one scope is required (read, trade, cancel)")
    try:
        return frozenset(Scope(s) for s in items)
    except ValueError:
        raise ValueError(f"unknown scope in {text!r}; allowed: read, trade, cancel") from None


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account: str
    scopes: frozenset[Scope]
