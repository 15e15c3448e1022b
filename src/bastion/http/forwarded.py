"""The client's address and scheme behind trusted proxies (the nginx edge).

Only when the TCP peer is one of ``trusted`` networks are ``X-Forwarded-For`` and
``X-Forwarded-Proto`` believed.  The client is the rightmost address in X-Forwarded-For that
is not itself a trusted proxy (each proxy appends the address it saw, so everything left of
that may be forged by the client).  A malformed header is not believed at all: the peer is
the client then, and a proxy in front that cannot be trusted to write the header fails
towards the stricter answer (the proxy's own address, which per-address limits then cover).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_of(
    peer: str, headers: Mapping[str, list[str]], trusted: tuple[Network, ...]
) -> tuple[str, str | None]:
    """(client address, forwarded scheme or None)."""
    if not trusted or not _trusted(peer, trusted):
        return peer, None
    values = headers.get("x-forwarded-for")
    hops = [h.strip() for v in values for h in v.split(",")] if values else []
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            client = peer  # a malformed chain is not believed
            break
        client = hop
        if not _trusted(hop, trusted):
            break
    proto = headers.get("x-forwarded-proto")
    scheme = proto[0].strip().lower() if proto and len(proto) == 1 else None
    return client, scheme if scheme in ("http", "https") else None
