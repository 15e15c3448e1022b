"""What a pipeline stage decides about a request (ARCHITECTURE §2, stage contract)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Allow:
    """Go on to the next stage."""


@dataclass(frozen=True, slots=True)
class Deny:
    """Stop.  ``code`` is public; ``reason`` is internal detail for the ledger only.

    ``public_reason`` is a machine-readable code safe to show the caller (for example the
    instrument rule an order broke); it is never set for authentication failures.
    """

    stage: str
    code: ErrorCode
    reason: str
    public_reason: str | None = None
    retry_after: int | None = None  # seconds, for 429 and 503 answers


@dataclass(frozen=True, slots=True)
class Hold:
    """Stop until a person decides (step-up or review)."""

    stage: str
    reason: str
    hold_id: str | None = None  # what the operator confirms (``bastion fraud confirm``)


ALLOW = Allow()
Verdict = Allow | Deny | Hold
