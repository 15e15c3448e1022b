"""Binance-style apiRestrictions answers → permissions, and the acceptance rule."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.domain.credentials import CredentialPermissions, audit
from bastion.venues.binance_restrictions import RestrictionsFormatError, parse_api_restrictions

# The example response in Binance's documentation of GET /sapi/v1/account/apiRestrictions.
DOCUMENTED_EXAMPLE = b"""{
  "ipRestrict": false, "createTime": 1623840271000, "enableReading": true, "enableWithdrawals": false,
  "enableInternalTransfer": true, "enableMargin": false, "enableFutures": false,
  "permitsUniversalTransfer": true, "enableVanillaOptions": false, "enableFixApiTrade": false,
  "enableFixReadOnly": true, "enableSpotAndMarginTrading": false, "enablePortfolioMarginTrading": true
}"""


def test_the_documented_example() -> None:
    permissions = parse_api_restrictions(DOCUMENTED_EXAMPLE)
    assert permissions == CredentialPermissions(
        can_read=True, can_trade=True, can_withdraw=False, can_transfer=True, ip_restricted=False
    )
    refusals, warnings = audit(permissions)
    assert refusals == ["it can transfer funds out of the account (internal or universal transfer)"]
    assert warnings == ["it has no IP restriction at the venue: restrict it to Bastion's address"]


def test_a_trade_only_restricted_key_passes_cleanly() -> None:
    permissions = parse_api_restrictions(
        {
            "ipRestrict": True,
            "enableReading": True,
            "enableSpotAndMarginTrading": True,
            "enableWithdrawals": False,
            "enableInternalTransfer": False,
            "permitsUniversalTransfer": False,
        }
    )
    assert audit(permissions) == ([], [])


def test_withdrawals_are_refused() -> None:
    permissions = parse_api_restrictions(
        {
            "ipRestrict": True,
            "enableWithdrawals": True,
            "enableInternalTransfer": False,
            "permitsUniversalTransfer": False,
            "enableSpotAndMarginTrading": True,
        }
    )
    assert audit(permissions)[0] == ["it can withdraw funds"]


def test_silence_about_withdrawals_or_transfers_fails_closed() -> None:
    permissions = parse_api_restrictions({"ipRestrict": True, "enableSpotAndMarginTrading": True})
    assert (permissions.can_withdraw, permissions.can_transfer) == (True, True)
    assert len(audit(permissions)[0]) == 2


def test_a_read_only_key_is_accepted_with_a_warning() -> None:
    permissions = parse_api_restrictions(
        {
            "ipRestrict": True,
            "enableReading": True,
            "enableWithdrawals": False,
            "enableInternalTransfer": False,
            "permitsUniversalTransfer": False,
        }
    )
    refusals, warnings = audit(permissions)
    assert refusals == []
    assert warnings == ["it cannot trade: orders through it will be refused by the venue"]


@pytest.mark.parametrize("raw", [b"[]", b"{", b'{"enableWithdrawals": "no"}', b'{"ipRestrict": 1}'])
def test_malformed_answers_are_refused(raw: bytes) -> None:
    with pytest.raises(RestrictionsFormatError):
        parse_api_restrictions(raw)


@given(st.binary(max_size=200))
def test_parser_raises_only_its_error(raw: bytes) -> None:
    with contextlib.suppress(RestrictionsFormatError):
        parse_api_restrictions(raw)
