"""Policies: what a key may do, as data.

A policy document is sparse: it names only the fields it sets.  Each account has one
(the defaults for its keys) and each key may have one; the **effective policy** of a key is
the account's document overlaid by the key's (a field the key sets wins).  Documents are
versioned by the store, validated whole on load (an invalid document is refused with a
message naming the field) and every change is recorded in the ledger.

In a document a field that is absent keeps its stored value; ``null`` removes it (the
level below applies again).  Decimals are strings, like everywhere in Bastion's API.

Field names are part of the public contract (docs/policies.md):

``scopes``, ``symbols``, ``sides``, ``order_types``, ``max_order_quantity``,
``max_order_notional``, ``max_open_orders``, ``max_position``, ``max_daily_notional``,
``max_daily_loss``, ``price_band_pct``, ``price_band_ticks``, ``orders_per_second``,
``cancels_per_second``, ``max_order_to_trade_ratio``, ``trading_windows``, ``reduce_only``,
``rate_limit`` (``{"per_second": "…", "burst": …}``: the key's request rate, issue 6).

Scopes are the key's own (stored with the key); an account's ``scopes`` is a ceiling for
all its keys.  There is no scope for withdrawals, transfers or account-security changes:
bot keys cannot hold them, and a document that asks for one is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import UNSET, Meta, UnsetType

from bastion.domain.money import DecimalFormatError, parse_decimal
from bastion.domain.orders import OrderType, Side
from bastion.domain.principals import Scope
from bastion.errors import PolicyError

_DEC = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$(?!\n)"
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)"
_SYMBOL = r"^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?$(?!\n)"
Dec = Annotated[str, Meta(pattern=_DEC, max_length=40)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DOCUMENT_BYTES = 65_536


class TradingWindow(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A UTC time-of-day window, ``start`` inclusive, ``end`` exclusive; it may wrap past
    midnight (``22:00``-``02:00``).  ``days`` are the days the window opens on (every day
    when absent)."""

    start: Annotated[str, Meta(pattern=_HHMM)]
    end: Annotated[str, Meta(pattern=_HHMM)]
    days: Annotated[list[Day], Meta(min_length=1, max_length=7)] | None = None


class RateLimitRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A key's request rate: ``per_second`` (a decimal string) with a ``burst``."""

    per_second: Dec
    burst: Annotated[int, Meta(ge=1, le=1_000_000)]


class PolicyDocument(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One level's policy, as written by an operator.  ``UNSET`` (absent): keep the stored
    value; ``None`` (``null``): remove it."""

    scopes: Annotated[list[Scope], Meta(max_length=3)] | UnsetType | None = UNSET
    symbols: (
        Annotated[list[Annotated[str, Meta(pattern=_SYMBOL)]], Meta(max_length=500)] | UnsetType | None
    ) = UNSET
    sides: Annotated[list[Side], Meta(min_length=1, max_length=2)] | UnsetType | None = UNSET
    order_types: Annotated[list[OrderType], Meta(min_length=1, max_length=2)] | UnsetType | None = UNSET
    max_order_quantity: Dec | UnsetType | None = UNSET
    max_order_notional: Dec | UnsetType | None = UNSET
    max_open_orders: Annotated[int, Meta(ge=0, le=1000000)] | UnsetType | None = UNSET
    max_position: Dec | UnsetType | None = UNSET
    max_daily_notional: Dec | UnsetType | None = UNSET
    max_daily_loss: Dec | UnsetType | None = UNSET
    price_band_pct: Dec | UnsetType | None = UNSET
    price_band_ticks: Annotated[int, Meta(ge=1, le=1000000000)] | UnsetType | None = UNSET
    orders_per_second: Dec | UnsetType | None = UNSET
    cancels_per_second: Dec | UnsetType | None = UNSET
    max_order_to_trade_ratio: Dec | UnsetType | None = UNSET
    trading_windows: Annotated[list[TradingWindow], Meta(min_length=1, max_length=50)] | UnsetType | None = (
        UNSET
    )
    reduce_only: bool | UnsetType | None = UNSET
    rate_limit: RateLimitRule | UnsetType | None = UNSET


FIELDS: tuple[str, ...] = PolicyDocument.__struct_fields__
_POSITIVE: tuple[str, ...] = ("max_order_quantity", "max_order_notional", "max_position")
_POSITIVE += ("max_daily_notional", "max_daily_loss", "orders_per_second", "cancels_per_second")


def _check(doc: PolicyDocument) -> None:
    """The rules a schema cannot say; raises :class:`PolicyError` naming the field."""
    for name in _POSITIVE:
        value = getattr(doc, name)
        if isinstance(value, str) and Decimal(value) <= 0:
            raise PolicyError(f"`{name}` must be greater than 0 (remove it with null for no limit)")
    pct = doc.price_band_pct
    if isinstance(pct, str) and not Decimal(0) < Decimal(pct) <= 100:
        raise PolicyError("`price_band_pct` must be greater than 0 and at most 100")
    ratio = doc.max_order_to_trade_ratio
    if isinstance(ratio, str) and Decimal(ratio) < 1:
        raise PolicyError("`max_order_to_trade_ratio` must be at least 1")
    for name in ("orders_per_second", "cancels_per_second"):
        rate = getattr(doc, name)
        if isinstance(rate, str) and Decimal(rate) > 100_000:
            raise PolicyError(f"`{name}` must be at most 100000")
    if isinstance(doc.rate_limit, RateLimitRule) and not 0 < Decimal(doc.rate_limit.per_second) <= 100_000:
        raise PolicyError("`rate_limit.per_second` must be greater than 0 and at most 100000")
    if isinstance(doc.trading_windows, list):
        for i, window in enumerate(doc.trading_windows):
            if window.start == window.end:
                raise PolicyError(f"`trading_windows[{i}]`: start and end are equal (an empty window)")
            if window.days is not None and len(set(window.days)) != len(window.days):
                raise PolicyError(f"`trading_windows[{i}].days` repeats a day")
    for name in ("scopes", "symbols", "sides", "order_types"):
        items = getattr(doc, name)
        if isinstance(items, list) and len(set(items)) != len(items):
            raise PolicyError(f"`{name}` repeats an item")


def parse_document(raw: bytes | str, *, filename: str = "") -> PolicyDocument:
    """Decode a YAML or JSON policy document strictly; refused whole when any field is wrong."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise PolicyError("the policy document is larger than 64 KiB")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if filename.endswith((".yaml", ".yml")) or not text.lstrip().startswith("{"):
            data: Any = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    return document_from(data if data is not None else {})


def document_from(data: object) -> PolicyDocument:
    """Validate an already-decoded mapping (from a file or the store)."""
    if not isinstance(data, dict):
        raise PolicyError("a policy document is a mapping of field names to values")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        withdraw = [k for k in unknown if "withdraw" in k or "transfer" in k]
        if withdraw:
            raise PolicyError(
                f"`{withdraw[0]}`: bot keys can never withdraw or transfer; no such field exists"
            )
        raise PolicyError(f"`{unknown[0]}` is not a policy field; fields: {', '.join(FIELDS)}")
    if isinstance(data.get("scopes"), list):
        bad = [s for s in data["scopes"] if isinstance(s, str) and s not in {x.value for x in Scope}]
        if bad:
            why = "is not a bot scope; bot keys may hold read, trade and cancel only"
            raise PolicyError(f"`scopes`: {str(bad[0])[:40]!r} {why}")
    try:
        doc = msgspec.convert(data, type=PolicyDocument)
    except msgspec.ValidationError as exc:
        raise PolicyError(_field_message(str(exc))) from None
    _check(doc)
    return doc


def _field_message(text: str) -> str:
    """msgspec says ``… - at `$.field[0]` ``; lead with the field, drop the ``$.``."""
    if " - at `$." in text:
        what, where = text.rsplit(" - at `$.", 1)
        return f"`{where.rstrip('`')}`: {what}"
    return text


def merge(stored: PolicyDocument, patch: PolicyDocument) -> PolicyDocument:
    """``stored`` with ``patch`` applied: absent fields kept, ``null`` fields removed."""
    values: dict[str, object] = {}
    for name in FIELDS:
        new = getattr(patch, name)
        old = getattr(stored, name)
        value = old if new is UNSET else new
        if value is not None and value is not UNSET:
            values[name] = value
    return PolicyDocument(**values)  # type: ignore[arg-type]


def to_mapping(doc: PolicyDocument) -> dict[str, object]:
    """The document's set fields as plain JSON data (for the store, the ledger and display)."""
    data: dict[str, object] = msgspec.to_builtins(doc)
    return {k: v for k, v in data.items() if v is not None}


def document_hash(doc: PolicyDocument) -> str:
    return hashlib.sha256(msgspec.json.encode(to_mapping(doc), order="sorted")).hexdigest()


# -- the effective policy, in the types the risk stage computes with ----------------------------
@dataclass(frozen=True, slots=True)
class Window:
    start_minute: int
    end_minute: int
    days: frozenset[int] | None  # 0 = Monday

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        day = when.weekday()
        if self.start_minute < self.end_minute:
            return (self.days is None or day in self.days) and self.start_minute <= minute < self.end_minute
        # wraps past midnight: the part after midnight belongs to the previous day's window
        if minute >= self.start_minute:
            return self.days is None or day in self.days
        if minute < self.end_minute:
            return self.days is None or (day - 1) % 7 in self.days
        return False


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """A key's policy after overlaying its account's defaults; ``None`` means no limit."""

    scopes: frozenset[Scope]
    symbols: frozenset[str] | None = None
    sides: frozenset[Side] | None = None
    order_types: frozenset[OrderType] | None = None
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_open_orders: int | None = None
    max_position: Decimal | None = None
    max_daily_notional: Decimal | None = None
    max_daily_loss: Decimal | None = None
    price_band_pct: Decimal | None = None
    price_band_ticks: int | None = None
    orders_per_second: Decimal | None = None
    cancels_per_second: Decimal | None = None
    max_order_to_trade_ratio: Decimal | None = None
    trading_windows: tuple[Window, ...] | None = None
    reduce_only: bool = False
    rate_limit: tuple[float, int] | None = None  # (per second, burst)
    # (account document version, key document version); 0 when a level has none
    versions: tuple[int, int] = (0, 0)

    def in_window(self, when: datetime) -> bool:
        return self.trading_windows is None or any(w.contains(when) for w in self.trading_windows)


def _dec(value: object) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_decimal(value)
    except DecimalFormatError:  # validated on load; a stored document is re-validated too
        raise PolicyError("a stored decimal is malformed") from None


def effective(
    key_scopes: frozenset[Scope],
    account_doc: PolicyDocument | None,
    key_doc: PolicyDocument | None,
    versions: tuple[int, int] = (0, 0),
) -> EffectivePolicy:
    """The policy the risk stage enforces for one key."""
    layered: dict[str, Any] = {}
    for doc in (account_doc, key_doc):
        if doc is not None:
            layered.update(to_mapping_raw(doc))
    scopes = key_scopes
    if account_doc is not None and isinstance(account_doc.scopes, list):
        scopes = key_scopes & frozenset(account_doc.scopes)  # the account's scopes are a ceiling
    windows = layered.get("trading_windows")
    return EffectivePolicy(
        scopes=scopes,
        symbols=frozenset(layered["symbols"]) if "symbols" in layered else None,
        sides=frozenset(layered["sides"]) if "sides" in layered else None,
        order_types=frozenset(layered["order_types"]) if "order_types" in layered else None,
        max_order_quantity=_dec(layered.get("max_order_quantity")),
        max_order_notional=_dec(layered.get("max_order_notional")),
        max_open_orders=layered.get("max_open_orders"),
        max_position=_dec(layered.get("max_position")),
        max_daily_notional=_dec(layered.get("max_daily_notional")),
        max_daily_loss=_dec(layered.get("max_daily_loss")),
        price_band_pct=_dec(layered.get("price_band_pct")),
        price_band_ticks=layered.get("price_band_ticks"),
        orders_per_second=_dec(layered.get("orders_per_second")),
        cancels_per_second=_dec(layered.get("cancels_per_second")),
        max_order_to_trade_ratio=_dec(layered.get("max_order_to_trade_ratio")),
        trading_windows=None
        if windows is None
        else tuple(
            Window(
                _minute(w.start),
                _minute(w.end),
                None if w.days is None else frozenset(DAYS.index(d) for d in w.days),
            )
            for w in windows
        ),
        reduce_only=bool(layered.get("reduce_only", False)),
        rate_limit=None
        if "rate_limit" not in layered
        else (float(layered["rate_limit"].per_second), layered["rate_limit"].burst),
        versions=versions,
    )


def to_mapping_raw(doc: PolicyDocument) -> Mapping[str, Any]:
    """Set fields with their typed values (not converted to JSON builtins)."""
    return {
        name: value for name in FIELDS if (value := getattr(doc, name)) is not UNSET and value is not None
    }


EMPTY = PolicyDocument()
