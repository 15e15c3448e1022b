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
