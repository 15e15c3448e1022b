"""What a venue credential may do, and Bastion's rule for accepting it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CredentialPermissions:
    """A venue's own report of a credential's permissions, in venue-neutral terms.  A venue
    that does not say whether a key can withdraw or transfer is taken to mean that it can."""

    can_read: bool
    can_trade: bool
    can_withdraw: bool
    can_transfer: bool
    ip_restricted: bool


def audit(permissions: CredentialPermissions) -> tuple[list[str], list[str]]:
    """(refusals, warnings): any refusal means the credential is not stored."""
    refusals: list[str] = []
    warnings: list[str] = []
    if permissions.can_withdraw:
        refusals.append("it can withdraw funds")
    if permissions.can_transfer:
        refusals.append("it can transfer funds out of the account (internal or universal transfer)")
    if not permissions.ip_restricted:
        warnings.append("it has no IP restriction at the venue: restrict it to Bastion's address")
    if not permissions.can_trade:
        warnings.append("it cannot trade: orders through it will be refused by the venue")
    return refusals, warnings
