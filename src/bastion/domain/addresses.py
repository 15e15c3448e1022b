"""Source-address rules for keys: CIDR allow-lists."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """Canonical CIDR strings; a bare address is a single host.  Host bits set below the
    prefix (``10.0.0.5/8``) are refused as a likely mistake."""
    out: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            raise ValueError(f"not a CIDR block or address: {value!r}") from None
        if str(network) not in out:
            out.append(str(network))
    return tuple(out)


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def address_allowed(address: str, cidrs: tuple[str, ...]) -> bool:
    """True when ``cidrs`` is empty (no restriction) or holds ``address``."""
    if not cidrs:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(cidrs))
