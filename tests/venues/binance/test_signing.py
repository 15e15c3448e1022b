"""Known-answer test: the HMAC-SHA256 example of Binance's SIGNED-endpoint documentation."""

from __future__ import annotations

from bastion.venues.binance.signing import encode_query, sign_query, signed_query

# The documented example key pair, query and signature (public test values, not secrets).
DOC_SECRET = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"  # pragma: allowlist secret
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"  # pragma: allowlist secret


def test_the_documented_example_signs_to_the_documented_signature() -> None:
    assert sign_query(DOC_SECRET, DOC_QUERY) == DOC_SIGNATURE


def test_signed_query_appends_window_timestamp_and_signature_in_that_order() -> None:
    params = [
        ("symbol", "LTCBTC"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "1"),
        ("price", "0.1"),
    ]
    assert signed_query(DOC_SECRET, params, timestamp_ms=1499827319559, recv_window_ms=5000) == (
        f"{DOC_QUERY}&signature={DOC_SIGNATURE}"
    )


def test_encoding_escapes_what_could_change_the_signed_text() -> None:
    # a client order id with & or = must not add parameters to what the venue reads
    assert encode_query([("newClientOrderId", "a&b=c d")]) == "newClientOrderId=a%26b%3Dc%20d"
    assert encode_query([("symbols", '["BTCUSDT"]')]) == "symbols=%5B%22BTCUSDT%22%5D"
