"""Binance-style ``GET /sapi/v1/account/apiRestrictions`` answers, turned into
:class:`~bastion.domain.credentials.CredentialPermissions` at the adapter boundary.

Field names as the venue documents them (``ipRestrict``, ``enableReading``,
``enableWithdrawals``, ``enableInternalTransfer``, ``permitsUniversalTransfer``,
``enableSpotAndMarginTrading``, ``enableMargin``, ``enableFutures``, ...).  Fields the venue
adds later are ignored; a missing withdrawal or transfer field counts as *allowed* (fail
closed), a missing ``ipRestrict`` as unrestricted.
"""

from __future__ import annotations

import msgspec

from bastion.domain.credentials import CredentialPermissions


class ApiRestrictions(msgspec.Struct, rename="camel", frozen=True):
    ip_restrict: bool | None = None
    enable_reading: bool | None = None
    enable_withdrawals: bool | None = None
    enable_internal_transfer: bool | None = None
    permits_universal_transfer: bool | None = None
    enable_spot_and_margin_trading: bool | None = None
    enable_margin: bool | None = None
    enable_futures: bool | None = None
    enable_vanilla_options: bool | None = None
    enable_portfolio_margin_trading: bool | None = None


class RestrictionsFormatError(ValueError):
    """The venue's answer is not an apiRestrictions object."""


def parse_api_restrictions(raw: bytes | dict[str, object]) -> CredentialPermissions:
    try:
        if isinstance(raw, bytes):
            restrictions = msgspec.json.decode(raw, type=ApiRestrictions)
        else:
            restrictions = msgspec.convert(raw, type=ApiRestrictions)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RestrictionsFormatError(f"not an apiRestrictions answer: {exc}") from None
    trading = (
        restrictions.enable_spot_and_margin_trading,
        restrictions.enable_margin,
        restrictions.enable_futures,
        restrictions.enable_vanilla_options,
        restrictions.enable_portfolio_margin_trading,
    )
    return CredentialPermissions(
        can_read=bool(restrictions.enable_reading),
        can_trade=any(bool(t) for t in trading),
        can_withdraw=restrictions.enable_withdrawals is not False,
        can_transfer=restrictions.enable_internal_transfer is not False
        or restrictions.permits_universal_transfer is not False,
        ip_restricted=bool(restrictions.ip_restrict),
    )
