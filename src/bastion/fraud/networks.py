"""Which addresses and networks a key (and its account) has been used from.

A *network* is the address's /24 (IPv4) or /48 (IPv6) by default: without an ASN database,
that is the closest offline stand-in for "the same provider".  Sightings are learned only
from requests the fraud stage allowed without an alert, or that an operator confirmed; a
thief's refused request never teaches Bastion that his network is normal.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of a rule
def network_of(address: str, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str:
    """The network an address belongs to, as CIDR text ("" for a non-address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(slots=True)
class Sightings:
    """What one key (or one account) is known to have used."""

    addresses: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)

    def knows(self, address: str, network: str) -> tuple[bool, bool]:
        return address in self.addresses, network in self.networks

    def add(self, address: str, network: str) -> None:
        self.addresses.add(address)
        self.networks.add(network)

    @property
    def empty(self) -> bool:
        return not self.networks


@dataclass(frozen=True, slots=True)
class Sighting:
    """A learned (key, address) pair, to be stored."""

    key_id: str
    account: str
    address: str
    network: str
    at: datetime


@dataclass(slots=True)
class KeyOrigin:
    """What the new-network rule needs to know of a key besides its sightings."""

    created_at: datetime | None  # creation, or rotation for a key that replaced another


def sightings_from(rows: Iterable[tuple[str, str]]) -> Sightings:
    """(address, network) rows into a :class:`Sightings`."""
    found = Sightings()
    for address, network in rows:
        found.add(address, network)
    return found
