"""Binance's SIGNED-endpoint request signature: HMAC-SHA256 over the exact query string sent.

Per the venue's "SIGNED (TRADE and USER_DATA) endpoint security" rules: the ``signature``
parameter is the lowercase hex HMAC-SHA256 of the total parameter string, keyed with the API
secret; the API key travels in the ``X-MBX-APIKEY`` header; ``timestamp`` (milliseconds, from
the caller's clock) and ``recvWindow`` bound how long the venue accepts the request.  Bastion
sends every parameter in the query string (none in a body), so the query string is the whole
signed text.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import quote

API_KEY_HEADER = "X-MBX-APIKEY"  # pragma: allowlist secret - a header name


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """``k=v&...`` in the given order, each part percent-encoded (RFC 3986 unreserved kept)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)


def sign_query(secret: bytes, query: str) -> str:
    """The hex HMAC-SHA256 signature of ``query`` under ``secret``."""
    return hmac.new(secret, query.encode("ascii"), hashlib.sha256).hexdigest()


def signed_query(
    secret: bytes, params: Sequence[tuple[str, str]], *, timestamp_ms: int, recv_window_ms: int
) -> str:
    """``params`` + ``recvWindow`` + ``timestamp``, encoded, with ``&signature=`` appended."""
    query = encode_query([*params, ("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))])
    return f"{query}&signature={sign_query(secret, query)}"
