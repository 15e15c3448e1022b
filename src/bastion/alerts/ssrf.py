"""SSRF protection for alert sinks: which addresses a webhook, Slack or SMTP sink may connect to.

An alert sink's target comes from configuration, but whoever can edit that configuration (or
a DNS record it names) must not be able to make the gateway reach *inside* its own network:
a cloud metadata service hands out credentials, and admin interfaces on loopback or the LAN
trust whoever can reach them.  So a target must be a **public** (globally routable) address.

Refused unless explicitly allowed:
  loopback (127/8, ::1), unspecified (0.0.0.0, ::), "this network" 0/8, private RFC 1918
  (10/8, 172.16/12, 192.168/16), shared CGNAT space 100.64/10, link-local (169.254/16,
  fe80::/10), IETF protocol assignments 192.0.0/24, benchmarking, documentation, unique-local
  fc00::/7, site-local fec0::/10, multicast, broadcast, reserved ranges, the local-use NAT64
  prefix 64:ff9b:1::/48, and anything else the standard library does not call global.
  Addresses that wrap an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
  ``64:ff9b::a.b.c.d``, 6to4 ``2002:aabb:ccdd::``) are judged by the IPv4 address inside.

A non-public address is allowed only when the sink is configured with ``allow_private`` **and**
the address lies in one of the operator's ``allowed_networks`` (both are needed, so neither a
stray flag nor a stray network opens anything alone).  Cloud metadata addresses are refused
always, whatever is allowed.  Plain ``http://`` is allowed only to an allowed network.

Names are checked where they are resolved: :class:`CheckedResolver` is the resolver of the
webhook sinks' aiohttp connector, so the addresses checked are exactly the ones connected to
(a DNS answer that changes between a check and the connection cannot slip through), and a
name with any refused address is refused whole.  The SMTP sink resolves with
:meth:`TargetPolicy.resolve` and connects to the checked address itself.  Messages name the
host or address and the reason, never a URL's path or query (webhook paths hold tokens).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import TypeAlias

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bastion.errors import AlertError, ConfigError, TargetRefused

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Always refused, whatever is allowed: instance metadata and credential endpoints.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle ...
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS pod identity agent
        "fd00:ec2::23",  # AWS EKS pod identity agent over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure platform (WireServer); a public address reachable only from inside Azure
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NON_PUBLIC: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network' range"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("198.18.0.0/15", "benchmarking range"),
        ("192.0.2.0/24", "documentation range"),
        ("198.51.100.0/24", "documentation range"),
        ("203.0.113.0/24", "documentation range"),
        ("255.255.255.255/32", "broadcast"),
        ("64:ff9b:1::/48", "local-use NAT64 prefix"),
        ("fc00::/7", "unique-local"),
        ("fec0::/10", "site-local"),
        ("2001:db8::/32", "documentation range"),
        ("100::/64", "discard prefix"),
        ("2001::/32", "Teredo tunnel"),
    )
)
# The last label of a DNS name is never all digits: such a host is a legacy numeric IPv4 form
# (2130706433, 127.1, 0x7f.1) that resolvers would quietly turn into an address.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.I)
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_MAX_HOST = 253


def _parse(address: str) -> IPAddress:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        raise TargetRefused(f"{_shown(address)} is not an IP address") from None


def _unscoped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return ipaddress.IPv6Address(int(ip))
    return ip


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a mapped, NAT64 or 6to4 IPv6 address reaches, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def _non_public(ip: IPAddress) -> str | None:
    """Why ``ip`` (unscoped) is not a public address, or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = _non_public(inner)
            return f"it wraps {inner}, which is {why}" if why else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    for network, why in _NON_PUBLIC:
        if ip.version == network.version and ip in network:
            return why
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private or not ip.is_global:
        return "not globally routable"
    return None


def _metadata(ip: IPAddress) -> bool:
    if ip in METADATA_ADDRESSES:
        return True
    inner = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return inner is not None and inner in METADATA_ADDRESSES


def _shown(text: str) -> str:
    """A host or address for a message: printable and short."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= 80 else clean[:79] + "…"


def check_host_syntax(host: str) -> None:
    """Refuse a host that is neither an IP literal nor a plausible DNS name (spaces, escapes,
    legacy numeric IPv4 forms, overlong names)."""
    if not host:
        raise TargetRefused("the target has no host")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return
    except ValueError:
        pass
    if not host.isascii():  # an internationalised name: judge its ASCII (punycode) form
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused(f"host {_shown(host)} is not a valid host name") from None
    if len(host) > _MAX_HOST or not _HOST_NAME.fullmatch(host):
        raise TargetRefused(f"host {_shown(host)} is not a valid host name")
    labels = host.rstrip(".").split(".")
    if any(not label for label in labels):
        raise TargetRefused(f"host {_shown(host)} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise TargetRefused(f"host {_shown(host)} is not a canonical IP address or a DNS name")


class TargetPolicy:
    """Which addresses sinks may connect to.  ``allowed_networks`` are CIDRs the operator allows
    explicitly (e.g. ``["127.0.0.1/32"]``); they matter only for sinks with ``allow_private``."""

    def __init__(self, allowed_networks: Sequence[str] = ()) -> None:
        if isinstance(allowed_networks, str):
            raise ConfigError("allowed networks must be a list of CIDRs, not one string")
        networks: list[IPNetwork] = []
        for cidr in allowed_networks:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ConfigError(f"allowed network {cidr!r} is not a valid CIDR: {exc}") from None
            if network.prefixlen == 0:
                raise ConfigError(f"allowed network {cidr!r} would allow every address; name the networks")
            networks.append(network)
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(networks)

    def _allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_v4(ip)
            if inner is not None:
                candidates.append(inner)
        return any(
            c.version == network.version and c in network
            for c in candidates
            for network in self.allowed_networks
        )

    def check_address(self, address: str, *, allow_private: bool, only_allowed: bool = False) -> None:
        """Raise :class:`TargetRefused` unless ``address`` may be connected to.

        A public address passes; a non-public one only with ``allow_private`` and inside an
        allowed network; a metadata address never.  ``only_allowed`` (plain-HTTP targets)
        demands an allowed network even for a public address."""
        ip = _unscoped(_parse(address))
        shown = _shown(address)
        if _metadata(ip):
            raise TargetRefused(f"{shown} is refused: it is a cloud metadata address")
        allowed = allow_private and self._allowed(ip)
        why = _non_public(ip)
        if only_allowed and not allowed:
            raise TargetRefused(
                f"{shown} is refused: plain http:// is only allowed to an address in the allowed networks"
                " of a sink with allow_private"
            )
        if why is None or allowed:
            return
        if not allow_private:
            raise TargetRefused(f"{shown} is refused: {why}, and this sink does not allow private targets")
        raise TargetRefused(f"{shown} is refused: {why}, and it is not in the allowed networks")

    async def lookup(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[socket.AddressFamily, int, str, int]]:
        """(family, proto, address, port) for every address of ``host``, unchecked, deduplicated.
        Resolution failures raise a retryable :class:`AlertError`."""
        check_host_syntax(host)
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(bare, port, family=family, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise AlertError(f"cannot resolve {_shown(host)}: {exc}", retryable=True) from None
        found: list[tuple[socket.AddressFamily, int, str, int]] = []
        seen: set[str] = set()
        for fam, _type, proto, _name, sockaddr in infos:
            if fam not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = str(sockaddr[0])
            if fam == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in address:
                address = f"{address}%{sockaddr[3]}"
            if address not in seen:
                seen.add(address)
                found.append((fam, proto, address, int(sockaddr[1])))
        if not found:
            raise AlertError(f"{_shown(host)} resolves to no address", retryable=True)
        return found

    async def resolve(
        self, host: str, port: int, *, allow_private: bool, only_allowed: bool = False
    ) -> list[str]:
        """Every address of ``host`` (a name or an IP literal), each checked; refused whole if any
        one is refused, so a name resolving to a public and a private address is refused."""
        addresses = [address for _f, _p, address, _port in await self.lookup(host, port)]
        for address in addresses:
            self._check_resolved(host, address, allow_private=allow_private, only_allowed=only_allowed)
        return addresses

    def _check_resolved(self, host: str, address: str, *, allow_private: bool, only_allowed: bool) -> None:
        try:
            self.check_address(address, allow_private=allow_private, only_allowed=only_allowed)
        except TargetRefused as exc:
            if host.strip("[]") == address:
                raise
            raise TargetRefused(f"host {_shown(host)} resolves to {exc}") from None

    def parse_url(self, url: str, *, allow_private: bool) -> URL:
        """``url`` parsed and checked as :meth:`check_url` does."""
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
            raise TargetRefused("the URL contains spaces or control characters")
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise TargetRefused("the URL cannot be parsed") from None
        scheme = parsed.scheme.lower()
        if scheme not in ("https", "http"):
            raise TargetRefused(
                f"URL scheme {_shown(scheme)!r} is refused: only https:// (or http:// to an allowed"
                " private target)"
            )
        if parsed.user is not None or parsed.password is not None:
            raise TargetRefused("URLs with user information (user:password@) are refused")
        host = parsed.host
        if not host:
            raise TargetRefused("the URL has no host")
        check_host_syntax(host)
        plain = scheme == "http"
        if plain and not allow_private:
            raise TargetRefused(
                f"http:// to {_shown(host)} is refused: plain HTTP only goes to an allowed private target"
            )
        if is_ip(host):
            self.check_address(host, allow_private=allow_private, only_allowed=plain)
        return parsed

    def check_url(self, url: str, *, allow_private: bool) -> None:
        """Configuration-time check of a sink URL: https:// (http:// only with ``allow_private``,
        and then only to an allowed network), no user information, a host; an IP literal host
        is checked now, a DNS name whenever it is resolved."""
        self.parse_url(url, allow_private=allow_private)

    async def check_url_resolving(self, url: str, *, allow_private: bool) -> list[str]:
        """:meth:`check_url`, then resolve the host and check every address (``alerts add``)."""
        parsed = self.parse_url(url, allow_private=allow_private)
        host = parsed.host or ""  # parse_url refuses a URL without a host
        port = parsed.port or (443 if parsed.scheme.lower() == "https" else 80)
        return await self.resolve(
            host, port, allow_private=allow_private, only_allowed=parsed.scheme.lower() == "http"
        )


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that checks every address against the policy before aiohttp may
    connect to it; any refused address refuses the name (:class:`TargetRefused`).  ``inner``,
    if given, does the resolution (tests pass a fake); otherwise the loop's getaddrinfo does.

    aiohttp does not call a resolver for IP-literal hosts, so sinks check those themselves."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        allow_private: bool,
        only_allowed: bool = False,
        inner: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._allow_private = allow_private
        self._only_allowed = only_allowed
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is not None:
            results = await self._inner.resolve(host, port, family)
        else:
            results = [
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=found_port,
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
                for fam, proto, address, found_port in await self._policy.lookup(host, port, family)
            ]
        if not results:
            raise AlertError(f"{_shown(host)} resolves to no address", retryable=True)
        for result in results:
            self._policy._check_resolved(
                host, result["host"], allow_private=self._allow_private, only_allowed=self._only_allowed
            )
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
