"""SSRF protection for alert sinks: which addresses and URLs are refused, and that a name is
checked by every address it resolves to.  Nothing beyond loopback is ever contacted: public
addresses appear only as literals, and the only name resolved is ``localhost``."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from bastion.alerts.ssrf import CheckedResolver, TargetPolicy
from bastion.errors import AlertError, ConfigError, TargetRefused

NON_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.1.1",
    "fe80::1",
    "fe80::1%1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.10",
    "198.18.0.1",
    "::7f00:1",  # deprecated IPv4-compatible form
]
METADATA = [
    "169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "169.254.170.2",
    "::ffff:169.254.169.254",
]
PUBLIC = ["93.184.215.14", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::101:101", "2002:101:101::"]


@pytest.mark.parametrize("address", NON_PUBLIC + METADATA)
def test_non_public_addresses_are_refused_without_allowance(address: str) -> None:
    policy = TargetPolicy()
    for allow_private in (False, True):
        with pytest.raises(TargetRefused, match="is refused"):
            policy.check_address(address, allow_private=allow_private)


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_an_allowed_network_is_not_enough_without_allow_private(address: str) -> None:
    policy = TargetPolicy(["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"])  # everything, explicitly
    with pytest.raises(TargetRefused, match="does not allow private targets"):
        policy.check_address(address, allow_private=False)


@pytest.mark.parametrize("address", METADATA)
def test_metadata_addresses_are_refused_even_when_allowed(address: str) -> None:
    policy = TargetPolicy(["169.254.0.0/16", "100.64.0.0/10", "fd00::/8", "::ffff:0:0/96"])
    with pytest.raises(TargetRefused, match="metadata"):
        policy.check_address(address, allow_private=True)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    TargetPolicy().check_address(address, allow_private=False)
    TargetPolicy(["10.0.0.0/8"]).check_address(address, allow_private=True)


def test_loopback_is_allowed_only_with_allow_private_and_a_covering_network() -> None:
    covering = TargetPolicy(["127.0.0.1/32"])
    covering.check_address("127.0.0.1", allow_private=True)
    covering.check_address("::ffff:127.0.0.1", allow_private=True)  # the same address, mapped
    with pytest.raises(TargetRefused, match="does not allow private"):
        covering.check_address("127.0.0.1", allow_private=False)
    with pytest.raises(TargetRefused, match="not in the allowed networks"):
        covering.check_address("127.0.0.2", allow_private=True)
    with pytest.raises(TargetRefused, match="not in the allowed networks"):
        TargetPolicy(["10.0.0.0/8"]).check_address("127.0.0.1", allow_private=True)


def test_messages_name_the_address_and_the_reason() -> None:
    with pytest.raises(TargetRefused) as caught:
        TargetPolicy().check_address("10.9.8.7", allow_private=False)
    assert "10.9.8.7" in str(caught.value) and "RFC 1918" in str(caught.value)
    with pytest.raises(TargetRefused) as wrapped:
        TargetPolicy().check_address("::ffff:192.168.0.1", allow_private=False)
    assert "192.168.0.1" in str(wrapped.value)
    assert caught.value.retryable is False


def test_not_an_address_is_refused() -> None:
    with pytest.raises(TargetRefused, match="not an IP address"):
        TargetPolicy().check_address("example.com", allow_private=False)


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-network", "10.0.0.1/8", "0.0.0.0/0", "::/0"])
def test_invalid_or_unbounded_networks_fail_at_construction(cidr: str) -> None:
    with pytest.raises(ConfigError):
        TargetPolicy([cidr])


def test_a_single_string_is_not_taken_for_a_list_of_networks() -> None:
    with pytest.raises(ConfigError):
        TargetPolicy("127.0.0.1/32")


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("https://user:pw@hooks.example.com/x", "user information"),  # pragma: allowlist secret
        ("https://user@hooks.example.com/x", "user information"),
        ("ftp://hooks.example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:25/", "scheme"),
        ("https:///path-only", "no host"),
        ("http://93.184.215.14/hook", "plain HTTP"),
        ("http://hooks.example.com/hook", "plain HTTP"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[::ffff:a9fe:a9fe]/", "metadata"),
        ("https://2130706433/", "canonical"),  # 127.0.0.1 as one number
        ("https://127.1/", "canonical"),
        ("https://0x7f.0.0.1/", "not a valid host|canonical"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "control"),
        ("https://good.example\\@evil.example/", "parsed"),
    ],
)
def test_bad_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(TargetRefused, match=match):
        TargetPolicy().check_url(url, allow_private=False)


def test_refusals_never_echo_the_path_or_query() -> None:
    with pytest.raises(TargetRefused) as caught:
        TargetPolicy().check_url("https://10.0.0.5/T0KEN/B1234?sig=s3cret", allow_private=False)
    assert "10.0.0.5" in str(caught.value)
    assert "T0KEN" not in str(caught.value) and "s3cret" not in str(caught.value)


def test_good_urls_pass() -> None:
    TargetPolicy().check_url("https://hooks.example.com/services/T/B/X?a=1", allow_private=False)
    TargetPolicy().check_url("https://93.184.215.14:8443/hook", allow_private=False)
    TargetPolicy().check_url("https://bücher.example/hook", allow_private=False)  # judged as punycode
    # plain HTTP only to an allowed private target
    local = TargetPolicy(["127.0.0.1/32"])
    local.check_url("http://127.0.0.1:9000/hook", allow_private=True)
    with pytest.raises(TargetRefused, match="plain http"):
        local.check_url("http://93.184.215.14/hook", allow_private=True)  # public, but not allowed


def test_a_dns_name_is_not_resolved_at_configuration_time() -> None:
    # check_url has no event loop to resolve with; names are checked when resolved
    TargetPolicy().check_url("https://alerts.internal.example/hook", allow_private=False)


# --- resolution -----------------------------------------------------------------------------


async def test_localhost_is_refused_unless_allowed() -> None:
    with pytest.raises(TargetRefused, match="localhost"):
        await TargetPolicy().resolve("localhost", 443, allow_private=False)
    with pytest.raises(TargetRefused):
        await TargetPolicy(["127.0.0.0/8", "::1/128"]).resolve("localhost", 443, allow_private=False)
    addresses = await TargetPolicy(["127.0.0.0/8", "::1/128"]).resolve("localhost", 443, allow_private=True)
    assert addresses and set(addresses) <= {"127.0.0.1", "::1"}


async def test_literal_addresses_resolve_to_themselves() -> None:
    assert await TargetPolicy().resolve("93.184.215.14", 443, allow_private=False) == ["93.184.215.14"]
    with pytest.raises(TargetRefused, match="loopback"):
        await TargetPolicy().resolve("127.0.0.1", 443, allow_private=False)
    with pytest.raises(TargetRefused, match="loopback"):
        await TargetPolicy().resolve("[::1]", 443, allow_private=False)


async def test_legacy_numeric_hosts_are_refused_before_resolution() -> None:
    with pytest.raises(TargetRefused, match="canonical"):
        await TargetPolicy(["127.0.0.0/8"]).resolve("2130706433", 80, allow_private=True)


def _fake_getaddrinfo(answers: dict[str, list[str]]) -> Any:
    async def getaddrinfo(host: str, port: int, **_kw: object) -> list[Any]:
        infos: list[Any] = []
        for address in answers[host]:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    return getaddrinfo


async def test_a_name_with_a_public_and_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.7"], "public.example": ["93.184.215.14", "1.1.1.1"]}
    monkeypatch.setattr(loop, "getaddrinfo", _fake_getaddrinfo(answers))
    policy = TargetPolicy()
    with pytest.raises(TargetRefused, match=r"mixed\.example resolves to 10\.0\.0\.7"):
        await policy.resolve("mixed.example", 443, allow_private=False)
    assert await policy.resolve("public.example", 443, allow_private=False) == ["93.184.215.14", "1.1.1.1"]


async def test_check_url_resolving_checks_the_resolved_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(
        loop,
        "getaddrinfo",
        _fake_getaddrinfo({"rebind.example": ["169.254.169.254"], "ok.example": ["1.1.1.1"]}),
    )
    policy = TargetPolicy(["169.254.0.0/16"])
    with pytest.raises(TargetRefused, match="metadata"):
        await policy.check_url_resolving("https://rebind.example/hook", allow_private=True)
    assert await policy.check_url_resolving("https://ok.example/hook", allow_private=False) == ["1.1.1.1"]


async def test_unresolvable_names_are_a_retryable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(host: str, port: int, **_kw: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", failing)
    with pytest.raises(AlertError, match="cannot resolve") as caught:
        await TargetPolicy().resolve("gone.example", 443, allow_private=False)
    assert caught.value.retryable and not isinstance(caught.value, TargetRefused)


# --- the aiohttp resolver -------------------------------------------------------------------


class FakeResolver(AbstractResolver):
    """Answers from a table, like a DNS server the attacker controls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_checked_resolver_refuses_a_rebound_name() -> None:
    inner = FakeResolver({"hooks.example": ["93.184.215.14"]})
    resolver = CheckedResolver(TargetPolicy(), allow_private=False, inner=inner)
    (first,) = await resolver.resolve("hooks.example", 443)
    assert first["host"] == "93.184.215.14"
    inner.answers["hooks.example"] = ["93.184.215.14", "127.0.0.1"]  # the record changes
    with pytest.raises(TargetRefused, match=r"127\.0\.0\.1"):
        await resolver.resolve("hooks.example", 443)
    assert inner.asked == ["hooks.example", "hooks.example"]
    await resolver.close()
    assert inner.closed


async def test_checked_resolver_with_the_loop_resolves_localhost_only_when_allowed() -> None:
    refusing = CheckedResolver(TargetPolicy(), allow_private=True)
    with pytest.raises(TargetRefused):
        await refusing.resolve("localhost", 80, socket.AF_INET)
    allowing = CheckedResolver(TargetPolicy(["127.0.0.0/8"]), allow_private=True)
    results = await allowing.resolve("localhost", 80, socket.AF_INET)
    assert [r["host"] for r in results] == ["127.0.0.1"] and results[0]["port"] == 80


async def test_checked_resolver_for_plain_http_demands_an_allowed_network() -> None:
    inner = FakeResolver({"public.example": ["93.184.215.14"]})
    resolver = CheckedResolver(
        TargetPolicy(["127.0.0.0/8"]), allow_private=True, only_allowed=True, inner=inner
    )
    with pytest.raises(TargetRefused, match="plain http"):
        await resolver.resolve("public.example", 80)
