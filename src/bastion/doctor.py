"""``bastion doctor``: a self-audit of an installation, with what to fix."""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from bastion.crypto._tls_groups import set_groups
from bastion.domain.principals import Principal, Scope
from bastion.errors import LedgerCorrupt
from bastion.ledger.signer import public_keys
from bastion.ledger.verify import verify_ledger
from bastion.ports import LedgerRow
from bastion.services import VAULT_DIR, Services
from bastion.tls import INTERMEDIATE_GROUPS

_SIZE_LIMITS = ("max_order_quantity", "max_order_notional", "max_position", "max_daily_notional")


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    level: Level
    name: str
    message: str
    fix: str = ""


def _private(path: Path, name: str, *, directory: bool = False) -> Check:
    if not path.exists():
        return Check(Level.FAIL, name, f"{path} is missing", "run 'bastion init'")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        wanted = "700" if directory else "600"
        return Check(
            Level.FAIL, name, f"{path} is mode {mode:o}: others can read it", f"chmod {wanted} {path}"
        )
    return Check(Level.OK, name, f"{path} is private ({mode:o})")


def file_checks(home: Path) -> list[Check]:
    """What can be audited without opening anything: the modes of the home's secret files.
    ``bastion doctor`` falls back on these when the services refuse to start (a master
    keyfile others can read, for one), so the refusal is still reported as a failed check."""
    checks = [
        _private(home, "home directory", directory=True),
        _private(home / "bastion.toml", "settings file"),
    ]
    checks += [
        _private(keyfile, f"master keyfile {keyfile.name}")
        for keyfile in sorted((home / VAULT_DIR).glob("master-*.key"))
    ]
    return checks


async def run_checks(services: Services) -> list[Check]:
    home, settings, now = services.home, services.settings, services.clock.now()
    checks = [
        _private(home, "home directory", directory=True),
        _private(home / "bastion.toml", "settings file"),
        _private(home / settings.server.tls_key, "TLS private key"),
    ]
    database = home / "bastion.db"
    if not settings.database.url:
        checks.append(_private(database, "database file"))
    # TLS
    cert_path = home / settings.server.tls_cert
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        left = cert.not_valid_after_utc - now
        if left <= timedelta(0):
            checks.append(
                Check(
                    Level.FAIL,
                    "TLS certificate",
                    "expired",
                    "replace it, or delete it and re-run 'bastion init'",
                )
            )
        elif left < timedelta(days=30):
            checks.append(Check(Level.WARN, "TLS certificate", f"expires in {left.days} days", "renew it"))
        else:
            checks.append(Check(Level.OK, "TLS certificate", f"valid for {left.days} more days"))
    except (OSError, ValueError):
        checks.append(
            Check(Level.FAIL, "TLS certificate", f"{cert_path} missing or unreadable", "run 'bastion init'")
        )
    full_groups = set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), INTERMEDIATE_GROUPS)
    checks.append(
        Check(Level.OK, "TLS settings", "TLS 1.2+, Mozilla intermediate ciphers and groups")
        if full_groups
        else Check(
            Level.WARN,
            "TLS settings",
            "only X25519 could be set as key-exchange group",
            "run on CPython with OpenSSL 3 to get X25519, P-256 and P-384",
        )
    )
    # Master keys
    present, in_use = await services.vault_status()
    for keyfile in sorted((home / VAULT_DIR).glob("master-*.key")):
        checks.append(_private(keyfile, f"master keyfile {keyfile.name}"))
    if services.token is None:
        checks.append(
            Check(
                Level.WARN,
                "master-key provider",
                "keyfile on the same disk as the database",
                "for production keep master keys in an HSM: vault.pkcs11_library, then "
                "'bastion vault rotate-master --to pkcs11'",
            )
        )
    else:
        checks.append(Check(Level.OK, "master-key provider", "PKCS#11 token configured"))
    unused = [v for v in present if v not in in_use and v != max(present)]
    if unused:
        checks.append(
            Check(
                Level.WARN,
                "master keys",
                f"versions {unused} are no longer needed",
                "'bastion vault retire --yes'",
            )
        )
    # Bastion keys
    for key in await services.keys.list():
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            continue
        if not key.allowed_cidrs:
            checks.append(
                Check(
                    Level.WARN,
                    f"key {key.key_id}",
                    "usable from any address",
                    f"'bastion keys update {key.key_id} --allow-ip <bot's address>'",
                )
            )
        policy = services.policies.for_principal(Principal(key.key_id, key.account, key.scopes))
        if Scope.TRADE in policy.scopes and not any(
            getattr(policy, limit) is not None for limit in _SIZE_LIMITS
        ):
            checks.append(
                Check(
                    Level.WARN,
                    f"limits of key {key.key_id}",
                    "may trade with no size limit (no order, position or daily notional limit)",
                    f"'bastion policy set {key.account} --file limits.yaml' (see docs/policies.md)",
                )
            )
        if key.expires_at is not None and key.expires_at - now < timedelta(days=7):
            checks.append(
                Check(
                    Level.WARN,
                    f"key {key.key_id}",
                    "expires within 7 days",
                    f"'bastion keys rotate {key.key_id} --overlap 24h'",
                )
            )
    left_behind = sorted((home / "keys").glob("*.pem")) if (home / "keys").is_dir() else []
    if left_behind:
        checks.append(
            Check(
                Level.WARN,
                "private keys in the home",
                f"{len(left_behind)} generated private key file(s)",
                f"move them to the bots that use them and delete them from {home / 'keys'}",
            )
        )
    # Venue credentials
    for credential in await services.credentials.list():
        permissions = credential.permissions
        if permissions.can_withdraw or permissions.can_transfer:
            checks.append(
                Check(
                    Level.FAIL,
                    f"credential {credential.id}",
                    "can withdraw or transfer funds",
                    "replace it with a trade-only key at the venue",
                )
            )
        elif not permissions.ip_restricted:
            checks.append(
                Check(
                    Level.WARN,
                    f"credential {credential.id}",
                    "has no IP restriction at the venue",
                    "restrict it to Bastion's address at the venue",
                )
            )
    # Trading states in force
    for level, subject, state in services.trading.not_active():
        target = "everything" if not subject else f"{level.value} {subject}"
        checks.append(
            Check(
                Level.WARN,
                f"kill switch ({target})",
                f"{target} is {state.value}",
                f"'bastion killswitch off --{level.value}{' ' + subject if subject else ''}' when it is safe",
            )
        )
    # Alerts: without a sink, fraud alerts reach only the log
    sinks = await services.oversight.list_sinks()
    if not sinks:
        checks.append(
            Check(
                Level.WARN,
                "alert sinks",
                "none: fraud alerts and halts reach only the log",
                "'bastion alerts add --webhook URL' (or --email, --slack), then 'bastion alerts test'",
            )
        )
    else:
        checks.append(Check(Level.OK, "alert sinks", f"{len(sinks)} configured"))
    # Ledger
    try:
        rows: list[LedgerRow] = [row async for row in services.ledger_store.rows()]
        store = services.ledger_store
        verified = verify_ledger(rows, await store.heads(), await public_keys(store))
        count = verified.entries
        checks.append(Check(Level.OK, "ledger", f"{count} entries verify, {verified.heads} signed heads"))
    except LedgerCorrupt as exc:
        checks.append(
            Check(
                Level.FAIL,
                "ledger",
                f"verification fails at entry {exc.index}: {exc.why}",
                "see docs/incident-response.md; export and keep the database as evidence",
            )
        )
    return checks
