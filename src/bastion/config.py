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


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    shield: ShieldSettings = msgspec.field(default_factory=ShieldSettings)
    ratelimit: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    paper: PaperSettings = msgspec.field(default_factory=PaperSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    vault: VaultSettings = msgspec.field(default_factory=VaultSettings)


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
"""
