"""Bastion's error codes and exception tree, in one place.

Public error codes are what a caller sees (``{"error": {"code", "message", "request_id"}}``);
they are stable and each maps to one HTTP status.  The *reason* behind a refusal is internal:
it goes to the ledger, never to the caller.

Exception tree::

    BastionError                     base of everything Bastion raises on purpose
    ├── ConfigError                  bad settings or home directory; raised at start-up
    ├── StoreError                   the database refused or is unreachable
    ├── SignatureError               a request signature or its headers failed to parse or verify
    ├── VenueError                   the venue could not be reached or answered nonsense (fail closed)
    │   └── VenueRejected            the venue refused an order (``reason`` says why)
    ├── PolicyError                  a policy document is invalid; the message names the field
    ├── IdempotencyConflict          a client order id was reused with other parameters
    ├── LedgerError                  the ledger could not be written or read
    │   └── LedgerCorrupt            verification found a bad entry (``index`` names the first one)
    └── AlertError                   an alert sink is misconfigured or a delivery failed (``retryable``)
        └── TargetRefused            a sink's target address is refused: private, loopback, link-local
                                     or metadata (SSRF)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    ORDER_REJECTED = "ORDER_REJECTED"
    RISK_REJECTED = "RISK_REJECTED"
    STEP_UP_REQUIRED = "STEP_UP_REQUIRED"
    SUSPICIOUS_ACTIVITY = "SUSPICIOUS_ACTIVITY"
    RATE_LIMITED = "RATE_LIMITED"
    BANNED = "BANNED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    OVERLOADED = "OVERLOADED"
    RATE_LIMITER_UNAVAILABLE = "RATE_LIMITER_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    VENUE_UNAVAILABLE = "VENUE_UNAVAILABLE"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.AUTHENTICATION_FAILED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.ORDER_REJECTED: 422,
    ErrorCode.RISK_REJECTED: 422,
    ErrorCode.STEP_UP_REQUIRED: 403,
    ErrorCode.SUSPICIOUS_ACTIVITY: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BANNED: 429,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.RATE_LIMITER_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.VENUE_UNAVAILABLE: 503,
}

# Generic, fixed messages: they never echo input and never explain an authentication failure.
MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "The request is malformed or does not match the schema.",
    ErrorCode.AUTHENTICATION_FAILED: "Authentication failed.",
    ErrorCode.FORBIDDEN: "The key is not allowed to do this.",
    ErrorCode.NOT_FOUND: "Not found.",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed on this route.",
    ErrorCode.IDEMPOTENCY_CONFLICT: "This client order id was already used with different parameters.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body is too large.",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "The request body must be application/json.",
    ErrorCode.ORDER_REJECTED: "The order was rejected.",
    ErrorCode.RISK_REJECTED: "The order was refused by a risk limit or the trading state.",
    ErrorCode.STEP_UP_REQUIRED: "The order is held until an operator confirms it; retry it with the same "
    "client_order_id once confirmed.",
    ErrorCode.SUSPICIOUS_ACTIVITY: "The request was refused by the gateway's fraud controls; an operator "
    "has been alerted.",
    ErrorCode.RATE_LIMITED: "Too many requests; retry after the time in Retry-After.",
    ErrorCode.BANNED: "Too many failed attempts; this address is blocked for the time in Retry-After.",
    ErrorCode.REQUEST_TIMEOUT: "The request was not received in time.",
    ErrorCode.OVERLOADED: "The gateway is saturated; retry after the time in Retry-After.",
    ErrorCode.RATE_LIMITER_UNAVAILABLE: "Rate limits cannot be checked right now; the request was refused.",
    ErrorCode.INTERNAL_ERROR: "Internal error: the request was refused. Retrying an order with the same "
    "client_order_id is safe.",
    ErrorCode.VENUE_UNAVAILABLE: "The venue is unavailable; retry with the same client order id.",
}


class BastionError(Exception):
    """Base of every exception Bastion raises on purpose."""


class ConfigError(BastionError):
    """Settings or the home directory are invalid; raised at start-up."""


class StoreError(BastionError):
    """The database refused an operation or could not be reached."""


class SignatureError(BastionError):
    """A request signature failed to parse or verify.  The message is internal detail."""


class VenueError(BastionError):
    """The venue could not be reached or answered outside its contract."""


class VenueRejected(VenueError):
    """The venue refused an order; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PolicyError(BastionError, ValueError):
    """A policy document is invalid and was refused whole; the message names the field."""


class IdempotencyConflict(BastionError):
    """A client order id was reused with different order parameters."""


class LedgerError(BastionError):
    """The ledger could not be written or read."""


class LedgerCorrupt(LedgerError):
    """Verification found a bad entry; ``index`` is the first bad one."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"ledger entry {index}: {why}")
        self.index = index
        self.why = why


class AlertError(BastionError):
    """An alert sink is misconfigured or a delivery failed.  ``retryable`` says whether sending
    the same alert again may succeed (a timeout or a 5xx) or not (a 4xx, a refused target)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TargetRefused(AlertError):
    """A sink's target address is refused: private, loopback, link-local or metadata (SSRF).
    Never retryable; the message names the host or address, never a URL's path or query."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
