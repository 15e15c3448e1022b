"""Typed settings, read from ``<home>/bastion.toml`` and validated at start-up.

There is deliberately no setting that turns a security stage off.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from bastion.errors import ConfigError
from bastion.pipeline.replay import MAX_WINDOW_SECONDS

CONFIG_NAME = "bastion.toml"


def default_home() -> Path:
    return Path(os.environ.get("BASTION_HOME") or ".bastion")


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: str = "tls/cert.pem"
    tls_key: str = "tls/key.pem"
    max_body_bytes: int = 65_536

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError("server.port must be 1..65535")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise ConfigError("server.max_body_bytes must be 1 KiB..16 MiB")


class ShieldSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Limits checked before any signature work (docs/configuration.md, docs/shield.md)."""

    max_connections_per_ip: int = 64
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    max_header_count: int = 64
    max_header_bytes: int = 16_384
    max_url_bytes: int = 2_048
    ip_requests_per_second: float = 100.0
    ip_burst: int = 200
    max_in_flight: int = 256
    ban_after_failures: int = 10
    key_lockout_after_failures: int = 20
    failure_window_seconds: float = 60.0
    ban_seconds: float = 30.0
    max_ban_seconds: float = 3_600.0
    # Proxies (the nginx edge) whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        checks = (
            (1 <= self.max_connections_per_ip <= 100_000, "max_connections_per_ip must be 1..100000"),
            (0.1 <= self.header_timeout_seconds <= 120, "header_timeout_seconds must be 0.1..120"),
            (0.1 <= self.body_timeout_seconds <= 300, "body_timeout_seconds must be 0.1..300"),
            (8 <= self.max_header_count <= 1_000, "max_header_count must be 8..1000"),
            (1_024 <= self.max_header_bytes <= 1_048_576, "max_header_bytes must be 1 KiB..1 MiB"),
            (256 <= self.max_url_bytes <= 65_536, "max_url_bytes must be 256..65536"),
            (0 < self.ip_requests_per_second <= 1_000_000, "ip_requests_per_second must be positive"),
            (1 <= self.ip_burst <= 10_000_000, "ip_burst must be 1..10000000"),
            (8 <= self.max_in_flight <= 100_000, "max_in_flight must be 8..100000"),
            (1 <= self.ban_after_failures <= 10_000, "ban_after_failures must be 1..10000"),
            (1 <= self.key_lockout_after_failures <= 10_000, "key_lockout_after_failures must be 1..10000"),
            (1 <= self.failure_window_seconds <= 86_400, "failure_window_seconds must be 1..86400"),
            (
                0 < self.ban_seconds <= self.max_ban_seconds <= 604_800,
                "ban_seconds must be within max_ban_seconds",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"shield.{message}")
        try:
            for cidr in self.trusted_proxies:
                ipaddress.ip_network(cidr)
        except ValueError:
            raise ConfigError("shield.trusted_proxies must be addresses or CIDR blocks") from None


class RateLimitSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Limits after authentication (docs/shield.md).  A key's own limit is its policy's
    ``rate_limit``; these are the defaults and the account and address limits."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_seconds: float = 0.25
    key_per_second: float = 20.0
    key_burst: int = 40
    account_per_second: float = 50.0
    account_burst: int = 100
    ip_per_second: float = 50.0
    ip_burst: int = 100

    def __post_init__(self) -> None:
        for name in ("key", "account", "ip"):
            rate, burst = getattr(self, f"{name}_per_second"), getattr(self, f"{name}_burst")
            if not 0 < rate <= 1_000_000 or not 1 <= burst <= 10_000_000:
                raise ConfigError(f"ratelimit.{name}_per_second must be positive and {name}_burst at least 1")
        if not 0.01 <= self.redis_timeout_seconds <= 10:
            raise ConfigError("ratelimit.redis_timeout_seconds must be 0.01..10")
        if self.backend == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("ratelimit.redis_url must be a redis://, rediss:// or unix:// URL")


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    replay_window_seconds: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.replay_window_seconds <= MAX_WINDOW_SECONDS:
            raise ConfigError(f"auth.replay_window_seconds must be 1..{MAX_WINDOW_SECONDS}")


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str = ""  # empty: SQLite file bastion.db in the home


class PaperSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bar_seconds: int = 60
    venue_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.bar_seconds <= 86_400:
            raise ConfigError("paper.bar_seconds must be 1..86400")
        if not 0 < self.venue_timeout_seconds <= 120:
            raise ConfigError("paper.venue_timeout_seconds must be in (0, 120]")


class VaultSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Where `bastion vault rotate-master` creates new master-key versions.
    provider: Literal["keyfile", "pkcs11"] = "keyfile"
    # PKCS#11 module and token; the PIN comes from the environment variable BASTION_HSM_PIN.
    pkcs11_library: str = ""
    pkcs11_label: str = "bastion"

    def __post_init__(self) -> None:
        if self.provider == "pkcs11" and not self.pkcs11_library:
            raise ConfigError("vault.provider = pkcs11 needs vault.pkcs11_library")


class LogSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    level: str = "info"
    file: str = "logs/bastion.log"

    def __post_init__(self) -> None:
        if self.level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log.level must be debug, info, warning or error")


class FraudSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Thresholds of the fraud stage's rules and how their points combine (docs/fraud.md).

    Each rule that fires adds its points; the learned model adds up to ``model_weight``; the
    total picks the action.  There is no setting that turns the stage off."""

    ipv4_prefix: int = 24  # an address's "network" for the new-network rule
    ipv6_prefix: int = 48
    new_network_points: float = 0.6
    new_address_points: float = 0.2  # a new address inside a network the key already used
    fresh_key_seconds: float = 600.0  # created or rotated this recently: a new network weighs more
    fresh_key_points: float = 0.75
    illiquid_below: str = "1000000"  # a typical 24-hour volume, in the quote currency
    illiquid_first_orders: int = 3  # a key's first orders in an illiquid symbol
    illiquid_points: float = 0.25  # with a new address (0.2) still below alert_at
    price_alert_bps: int = 500  # an aggressive price this far from the reference
    price_alert_points: float = 0.5
    price_far_bps: int = 2_000
    price_far_points: float = 1.0
    burst_window_seconds: float = 10.0
    burst_min_orders: int = 3
    burst_factor: float = 3.0  # times the most orders (or notional) the key usually sends in a window
    repeat_orders: int = 3  # the same order this many times in the window: a loop
    burst_warmup_orders: int = 20
    burst_points: float = 1.0
    notional_factor: float = 8.0  # one order this many times the key's usual notional
    notional_points: float = 1.0
    spoof_window_seconds: float = 600.0
    fast_cancel_seconds: float = 2.0
    spoof_min_fast_cancels: int = 2
    spoof_fast_cancel_ratio: float = 0.8
    spoof_baseline_max: float = 0.3  # keys that fast-cancel this often normally are judged by ratios
    spoof_points: float = 1.5
    ratio_min_orders: int = 50
    unfilled_ratio: float = 0.99
    max_order_to_trade: float = 100.0
    ratio_points: float = 0.2  # surveillance: they add to other signals, never alert alone
    probe_window_seconds: float = 600.0
    probe_denials: int = 8
    probe_points: float = 1.5
    probe_halt_denials: int = 20
    model_weight: float = 0.4
    model_warmup_orders: int = 50
    model_threshold: float = 0.9
    alert_at: float = 0.5
    hold_at: float = 1.0
    deny_at: float = 1.5
    halt_at: float = 2.5

    def __post_init__(self) -> None:
        from decimal import Decimal, InvalidOperation

        def bad(message: str) -> ConfigError:
            return ConfigError(f"fraud.{message}")

        if not 8 <= self.ipv4_prefix <= 32 or not 16 <= self.ipv6_prefix <= 128:
            raise bad("ipv4_prefix must be 8..32 and ipv6_prefix 16..128")
        try:
            if Decimal(self.illiquid_below) < 0:
                raise bad("illiquid_below must not be negative")
        except InvalidOperation:
            raise bad("illiquid_below must be a decimal number") from None
        points = [name for name in self.__struct_fields__ if name.endswith(("_points", "_weight"))]
        for name in points:
            if not 0 <= getattr(self, name) <= 10:
                raise bad(f"{name} must be 0..10")
        if not 0 < self.alert_at <= self.hold_at <= self.deny_at <= self.halt_at <= 100:
            raise bad("thresholds must rise: 0 < alert_at <= hold_at <= deny_at <= halt_at")
        if not 0 < self.price_alert_bps <= self.price_far_bps <= 100_000:
            raise bad("price_alert_bps must be positive and at most price_far_bps")
        for name in (
            "fresh_key_seconds",
            "burst_window_seconds",
            "spoof_window_seconds",
            "fast_cancel_seconds",
            "probe_window_seconds",
        ):
            if not 0 < getattr(self, name) <= 86_400:
                raise bad(f"{name} must be in (0, 86400]")
        counts = (
            "illiquid_first_orders",
            "burst_min_orders",
            "burst_warmup_orders",
            "spoof_min_fast_cancels",
            "repeat_orders",
        )
        for name in (*counts, "ratio_min_orders", "probe_denials", "model_warmup_orders"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise bad(f"{name} must be at least 1")
        if self.probe_halt_denials < self.probe_denials:
            raise bad("probe_halt_denials must be at least probe_denials")
        if self.burst_factor < 1 or self.notional_factor < 1 or self.max_order_to_trade < 1:
            raise bad("burst_factor, notional_factor and max_order_to_trade must be at least 1")
        ratios = (
            self.spoof_fast_cancel_ratio,
            self.spoof_baseline_max,
            self.unfilled_ratio,
            self.model_threshold,
        )
        if not all(0 < r <= 1 for r in ratios):
            raise bad("ratios and model_threshold must be in (0, 1]")


class AlertSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Alert delivery (docs/alerts.md).  Sinks themselves are added with ``bastion alerts add``."""

    # Private, loopback or link-local targets a sink added with --allow-private-network may use.
    # Cloud metadata addresses are refused whatever this says.
    allowed_private_networks: list[str] = msgspec.field(default_factory=list)
    dedupe_seconds: float = 60.0  # the same rule, key and action within this: sent once
    max_per_window: int = 5  # per rule and key
    window_seconds: float = 600.0
    attempts: int = 4  # per sink, with exponential backoff
    backoff_seconds: float = 0.2
    timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        try:
            for cidr in self.allowed_private_networks:
                ipaddress.ip_network(cidr)
        except ValueError:
            raise ConfigError("alerts.allowed_private_networks must be CIDR blocks") from None
        checks = (
            (0 <= self.dedupe_seconds <= 86_400, "dedupe_seconds must be 0..86400"),
            (1 <= self.max_per_window <= 10_000, "max_per_window must be 1..10000"),
            (1 <= self.window_seconds <= 86_400, "window_seconds must be 1..86400"),
            (1 <= self.attempts <= 10, "attempts must be 1..10"),
            (0 < self.backoff_seconds <= 60, "backoff_seconds must be in (0, 60]"),
            (0 < self.timeout_seconds <= 60, "timeout_seconds must be in (0, 60]"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"alerts.{message}")


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Who may scrape ``GET /metrics`` (others get a 404, as for any undeclared route)."""

    allowed_networks: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    def __post_init__(self) -> None:
        try:
            for cidr in self.allowed_networks:
                ipaddress.ip_network(cidr)
        except ValueError:
            raise ConfigError("metrics.allowed_networks must be addresses or CIDR blocks") from None


class VenueSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which venue orders go to: the built-in paper venue, or a Binance-spot REST API
    (``venues/binance/``), reached over verified HTTPS with every answer bounded and checked."""

    kind: Literal["paper", "binance"] = "paper"
    base_url: str = ""  # https://host[:port]; e.g. https://api.binance.com
    ca_file: str = ""  # verify the venue against this CA bundle (empty: the system store)
    symbols: list[str] = msgspec.field(default_factory=list)  # the venue's own, e.g. BTCUSDT
    # A venue on a private or loopback address needs both (as alert sinks do, see SSRF).
    allow_private_network: bool = False
    allowed_networks: list[str] = msgspec.field(default_factory=list)
    timeout_seconds: float = 5.0
    max_response_bytes: int = 1_048_576
    recv_window_ms: int = 5000
    poll_seconds: float = 1.0
    quote_max_age_seconds: float = 5.0
    max_quote_jump_bps: int = 5000
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.timeout_seconds <= 60:
            raise ConfigError("venue.timeout_seconds must be in (0, 60]")
        if not 1024 <= self.max_response_bytes <= 64 * 1024 * 1024:
            raise ConfigError("venue.max_response_bytes must be 1024..67108864")
        if not 100 <= self.recv_window_ms <= 60_000:
            raise ConfigError("venue.recv_window_ms must be 100..60000")
        if not 0.05 <= self.poll_seconds <= 60 or not self.poll_seconds < self.quote_max_age_seconds <= 600:
            raise ConfigError(
                "venue.poll_seconds must be 0.05..60 and below quote_max_age_seconds (up to 600)"
            )
        if not 1 <= self.max_quote_jump_bps <= 100_000:
            raise ConfigError("venue.max_quote_jump_bps must be 1..100000")
        if not 1 <= self.breaker_failures <= 1000 or not 0 < self.breaker_cooldown_seconds <= 3600:
            raise ConfigError("venue.breaker_failures must be 1..1000 and breaker_cooldown_seconds (0, 3600]")
        if self.kind == "paper":
            return
        if not self.base_url.startswith("https://"):
            raise ConfigError("venue.base_url must be an https:// URL for a real venue")
        if not self.symbols or len(self.symbols) > 200:
            raise ConfigError("venue.symbols must name 1..200 of the venue's symbols")
        for symbol in self.symbols:
            if not (
                2 <= len(symbol) <= 24 and symbol.isascii() and symbol.isalnum() and symbol.upper() == symbol
            ):
                raise ConfigError(f"venue.symbols: {symbol[:30]!r} is not a venue symbol such as BTCUSDT")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ConfigError(f"venue.ca_file {self.ca_file} does not exist")


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    shield: ShieldSettings = msgspec.field(default_factory=ShieldSettings)
    ratelimit: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    paper: PaperSettings = msgspec.field(default_factory=PaperSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    vault: VaultSettings = msgspec.field(default_factory=VaultSettings)
    fraud: FraudSettings = msgspec.field(default_factory=FraudSettings)
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    venue: VenueSettings = msgspec.field(default_factory=VenueSettings)


def load_settings(home: Path) -> Settings:
    path = home / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path} not found: run 'bastion init --home {home}' first")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return msgspec.convert(raw, type=Settings)
    except ConfigError:
        raise
    except (tomllib.TOMLDecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


DEFAULT_CONFIG = """\
# Bastion settings. Every value below is the default; see docs/configuration.md.
[server]
host = "127.0.0.1"
port = 8443
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
max_body_bytes = 65536

[shield]
# Checked before any signature work. See docs/shield.md.
max_connections_per_ip = 64
header_timeout_seconds = 5.0   # a request's headers must arrive within this (slowloris)
body_timeout_seconds = 10.0    # and its body within this (slow POST)
max_header_count = 64
max_header_bytes = 16384
max_url_bytes = 2048
ip_requests_per_second = 100.0
ip_burst = 200
max_in_flight = 256            # past half of it reads are shed, past 80 % new orders; cancels last
ban_after_failures = 10        # authentication failures from one address within the window
key_lockout_after_failures = 20  # failures naming one key id: other addresses are locked out of it
failure_window_seconds = 60.0
ban_seconds = 30.0             # doubles with each repeat offence
max_ban_seconds = 3600.0
trusted_proxies = []           # e.g. ["127.0.0.1/32"] behind the nginx edge (deploy/nginx)

[ratelimit]
# "memory" (one process) or "redis" (shared by replicas; one Lua round trip per check).
backend = "memory"
redis_url = "redis://127.0.0.1:6379/0"
redis_timeout_seconds = 0.25
key_per_second = 20.0        # a key's default; its policy's rate_limit overrides it
key_burst = 40
account_per_second = 50.0
account_burst = 100
ip_per_second = 50.0
ip_burst = 100

[auth]
# How old (or how far in the future) a signature's `created` may be, in seconds (1..60).
replay_window_seconds = 5

[database]
# Empty: SQLite file bastion.db in this home. PostgreSQL: postgresql+asyncpg://user@host/db
url = ""

[paper]
# Seconds of wall-clock time per replayed historical bar.
bar_seconds = 60
venue_timeout_seconds = 10.0

[log]
level = "info"
file = "logs/bastion.log"

[vault]
# Where `bastion vault rotate-master` creates new master keys: "keyfile" (vault/master-N.key)
# or "pkcs11" (an HSM; the PIN comes from the environment variable BASTION_HSM_PIN).
provider = "keyfile"
pkcs11_library = ""
pkcs11_label = "bastion"

[fraud]
# The fraud stage's rules and how their points combine; docs/fraud.md explains each one.
# Every rule that fires adds its points; the total picks the action.
alert_at = 0.5                 # allow, and alert an operator
hold_at = 1.0                  # refuse with 403 STEP_UP_REQUIRED until an operator confirms
deny_at = 1.5                  # refuse
halt_at = 2.5                  # refuse and halt the key (kill switch), cancelling its open orders
new_network_points = 0.6       # a key used from a network (/24, /48) it never used
fresh_key_seconds = 600.0      # ... within this long of its creation or rotation:
fresh_key_points = 0.75        # ... this much more
illiquid_below = "1000000"     # a typical 24-hour volume in the quote currency
illiquid_points = 0.25         # a key's first orders in such a symbol
price_alert_bps = 500          # an aggressive price 5 % from the reference
price_far_bps = 2000           # ... or 20 %
burst_window_seconds = 10.0
burst_factor = 3.0             # orders or notional in the window against the key's usual peak
repeat_orders = 3              # the same order this many times in the window: a loop
notional_points = 1.0          # one order 8 times the key's usual notional: held
spoof_window_seconds = 600.0   # spoofing and layering ratios per key and symbol
fast_cancel_seconds = 2.0
probe_window_seconds = 600.0
probe_denials = 8              # denials of one key in the window: probing
probe_halt_denials = 20        # ... and the key is halted
model_weight = 0.4             # the learned per-key baseline adds at most this much

[alerts]
# Sinks are added with `bastion alerts add`. A sink whose target is private, loopback or
# link-local needs --allow-private-network AND its address listed here. Metadata addresses
# (169.254.169.254 and the like) are always refused.
allowed_private_networks = []
dedupe_seconds = 60.0
max_per_window = 5             # alerts per rule and key per window
window_seconds = 600.0
attempts = 4
backoff_seconds = 0.2
timeout_seconds = 5.0

[metrics]
# Who may scrape GET /metrics; everyone else gets a 404.
allowed_networks = ["127.0.0.0/8", "::1/128"]

[venue]
# "paper" (built in, historical prices) or "binance" (a Binance-spot REST API; docs/venues.md).
kind = "paper"
base_url = ""                  # https:// only, e.g. "https://api.binance.com"
ca_file = ""                   # a CA bundle to verify the venue with (empty: the system store)
symbols = []                   # the venue's symbols to trade, e.g. ["BTCUSDT", "ETHUSDT"]
allow_private_network = false  # a venue on a private/loopback address needs this ...
allowed_networks = []          # ... and its network listed here (metadata addresses: never)
timeout_seconds = 5.0          # one venue call, connect to last byte
max_response_bytes = 1048576   # a longer answer fails the call
recv_window_ms = 5000          # how long the venue may accept a signed request
poll_seconds = 1.0             # quotes refreshed this often ...
quote_max_age_seconds = 5.0    # ... and no quote (orders refused) once this old
max_quote_jump_bps = 5000      # a last price moving more waits for the next poll to confirm it
breaker_failures = 5           # this many failed calls in a row stop calls ...
breaker_cooldown_seconds = 30.0  # ... for this long
"""
