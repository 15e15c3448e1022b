"""``bastion`` — the operator's command line.

Every command takes ``--home DIR`` (default ``$BASTION_HOME``, else ``./.bastion``) and
``--json`` for machine-readable output.  Errors print a one-line message and exit 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from bastion import __version__, control, logs
from bastion.clock import SystemClock
from bastion.config import CONFIG_NAME, DEFAULT_CONFIG, default_home, load_settings
from bastion.crypto import keys as keyfmt
from bastion.domain.policy import PolicyDocument, document_from, parse_document
from bastion.domain.principals import parse_scopes
from bastion.domain.trading import Level, TradingState
from bastion.errors import BastionError, ConfigError, LedgerCorrupt
from bastion.ledger.service import LedgerProofs
from bastion.ledger.signer import LedgerSigner, public_keys
from bastion.ledger.verify import Verified, read_export, verify_ledger, write_export
from bastion.ports import KeyRecord, LedgerRow
from bastion.services import PASSPHRASE_ENV, VAULT_DIR, Services, database_url
from bastion.store.db import Database, migrate
from bastion.store.repos import SqlLedgerStore
from bastion.tls import create_self_signed
from bastion.vault.master import KeyfileMasterKey

app = typer.Typer(
    help="Bastion: a security gateway for trading bots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Accounts on the venue.", no_args_is_help=True)
keys_app = typer.Typer(help="Bastion keys that bots sign with.", no_args_is_help=True)
ledger_app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
venues_app = typer.Typer(help="Venue credentials (sealed by the vault).", no_args_is_help=True)
app.add_typer(venues_app, name="venues")
vault_app = typer.Typer(help="The vault's master keys.", no_args_is_help=True)
app.add_typer(vault_app, name="vault")
policy_app = typer.Typer(help="What keys may do: scopes and pre-trade limits.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
killswitch_app = typer.Typer(
    help="Halt trading at once, for a key, an account or everything.", no_args_is_help=True
)
app.add_typer(killswitch_app, name="killswitch")

Home = Annotated[
    Path | None, typer.Option("--home", help="Bastion home (default $BASTION_HOME, else ./.bastion)")
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
AllowIp = Annotated[
    list[str] | None,
    typer.Option("--allow-ip", help="Source address or CIDR block allowed to use the key (repeatable)"),
]
T = TypeVar("T")


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser()


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data, sort_keys=True) if as_json else text)


def _fail(message: str, as_json: bool, code: int = 2) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": message}), err=True)
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _with_services(home: Path, action: Callable[[Services], Awaitable[T]]) -> T:
    settings = load_settings(home)
    # the command's log lines (alerts it sends, failures) go to the home's log, never stdout
    logs.configure(settings.log.level, home / settings.log.file if settings.log.file else None)

    async def main() -> T:
        services = Services.build(home, settings)
        await services.start()
        try:
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(main())


def _ensure_vault(home: Path) -> list[str]:
    """Create the vault's first master keyfile if there is none; what was added."""
    vault = home / VAULT_DIR
    if any(vault.glob("master-*.key")):
        return []
    vault.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = os.environ.get(PASSPHRASE_ENV, "").encode() or None  # seal it when one is set
    KeyfileMasterKey.create(vault / "master-1.key", passphrase)
    return [str(vault / "master-1.key")]


def _save_private_key(home: Path, key_id: str, private: Ed25519PrivateKey | None) -> Path | None:
    """Write a generated private key to the home's keys/ (0600, never overwriting)."""
    if private is None:
        return None
    path = (home / "keys" / f"{key_id}.pem").resolve()
    keyfmt.write_secret_file(path, keyfmt.private_key_pem(private))
    return path


def _emit_issued(
    as_json: bool, data: dict[str, Any], text: str, private_path: Path | None, secret: str | None
) -> None:
    """Print a newly issued key once: its private key's path or its HMAC secret."""
    if private_path is not None:
        data["private_key_path"] = str(private_path)
        text += f"\nprivate key written to {private_path} (mode 0600); it is not shown again"
    if secret is not None:
        data["secret"] = secret
        text += f"\nsecret (shown once, store it in the bot's secret store): {secret}"
    _emit(as_json, data, text)


def _actor() -> str:
    """Who is changing something, for the ledger (the operator plane will name its operator)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid {os.getuid()}"
    return f"{user} (cli, pid {os.getpid()})"


def _tell_server(home: Path, request: dict[str, Any]) -> bool:
    """Tell a running server (over its control socket); False when none is running."""
    return control.call(home, request) is not None


def _parse_duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d{1,6})([dhms])", text.strip())
    if match is None:
        raise ConfigError("durations look like 90d, 12h, 30m or 45s")
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": timedelta(days=amount),
        "h": timedelta(hours=amount),
        "m": timedelta(minutes=amount),
        "s": timedelta(seconds=amount),
    }[unit]


def main() -> None:
    try:
        app()
    except BastionError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


@app.command()
def version() -> None:
    """Print Bastion's version."""
    typer.echo(__version__)


@app.command()
def init(home: Home = None, as_json: Json = False) -> None:
    """Create the home: settings, a self-signed TLS certificate and the database."""
    path = _home(home)
    config = path / CONFIG_NAME
    try:
        if config.exists():
            added = _ensure_vault(path)
            migrate(database_url(path, load_settings(path)))
            _emit(
                as_json,
                {"home": str(path), "created": False, "added": added},
                f"{path} is already initialised" + (f"; added {', '.join(added)}" if added else ""),
            )
            return
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        config.write_text(DEFAULT_CONFIG, encoding="utf-8")
        os.chmod(config, 0o600)
        settings = load_settings(path)
        cert = path / settings.server.tls_cert
        key = path / settings.server.tls_key
        if not cert.exists():
            create_self_signed(cert, key, SystemClock().now())
        _ensure_vault(path)
        migrate(database_url(path, settings))
        if (path / "bastion.db").exists():
            os.chmod(path / "bastion.db", 0o600)  # it holds sealed secrets and the ledger
    except (BastionError, OSError) as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        {"home": str(path), "created": True, "tls_cert": str(cert)},
        f"initialised {path}\n  settings:    {config}\n  certificate: {cert}\n"
        f"next: bastion accounts create NAME --home {path}",
    )


@app.command()
def serve(
    home: Home = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Plain HTTP, loopback only (benchmarks)")
    ] = False,
) -> None:
    """Serve the gateway (HTTPS) with the paper venue."""
    from bastion import server

    path = _home(home)
    try:
        settings = load_settings(path)
        migrate(database_url(path, settings))
        logs.configure(settings.log.level, path / settings.log.file if settings.log.file else None)
        services = Services.build(path, settings)
        cert, key = server.tls_paths(path, settings)
        bind_host = host or settings.server.host
        bind_port = port or settings.server.port
        scheme = "http" if insecure_http else "https"
        typer.echo(
            f"Bastion {__version__} serving {scheme}://{bind_host}:{bind_port} (paper venue)\n"
            f"  TLS certificate to trust: {cert}\n"
            f"  logs: {path / settings.log.file}\n"
            f"  connect: bastion.client.BastionClient('{scheme}://{bind_host}:{bind_port}', key_id, "
            f"private_key_path, ca_cert='{cert}')",
            err=True,
        )
        server.run(
            server.build_app(services),
            host=bind_host,
            port=bind_port,
            cert=cert,
            key=key,
            shield=settings.shield,
            insecure_http=insecure_http,
        )
    except BastionError as exc:
        _fail(str(exc), False)


@accounts_app.command("create")
def accounts_create(
    name: str,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Who holds it; orders between one owner's accounts are refused"),
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Create an account on the paper venue, funded with demo balances."""
    try:
        _with_services(_home(home), lambda s: s.create_account(name, owner))
    except BastionError as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        {"account": name, "owner": owner or name, "created": True},
        f"account {name} (owner {owner or name}) created and funded on the paper venue",
    )


@accounts_app.command("erase")
def accounts_erase(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Crypto-shred an account's personal data (GDPR erasure): revoke every key of the account
    and destroy its data key.  Its ledger entries stay and still verify; the addresses sealed
    in them never open again."""
    if not yes:
        _fail("erasing cannot be undone: add --yes", as_json)
    path = _home(home)
    try:
        result = _with_services(path, lambda s: s.erase_account(name))
        _tell_server(path, {"op": "forget_subject", "subject": result["subject"]})
    except BastionError as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json, result, f"account {name}: personal data erased, {len(result['keys_revoked'])} key(s) revoked"
    )


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option(help="Account the key acts for")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: read,trade,cancel")] = "read",
    alg: Annotated[str, typer.Option(help="ed25519 (recommended) or hmac (HMAC-SHA256)")] = "ed25519",
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Ed25519 public key (PEM or OpenSSH) you generated")
    ] = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a key pair into a 0600 file")
    ] = False,
    expires_in: Annotated[str, typer.Option(help="Lifetime, e.g. 90d, 12h")] = "90d",
    label: Annotated[str, typer.Option(help="A note for operators")] = "",
    allow_ip: AllowIp = None,
    symbols: Annotated[str | None, typer.Option(help="Policy: symbols it may trade, comma-separated")] = None,
    max_order_quantity: Annotated[str | None, typer.Option(help="Policy: largest quantity per order")] = None,
    max_order_notional: Annotated[str | None, typer.Option(help="Policy: largest notional per order")] = None,
    max_open_orders: Annotated[int | None, typer.Option(help="Policy: most open orders at once")] = None,
    max_position: Annotated[str | None, typer.Option(help="Policy: largest position per symbol")] = None,
    max_daily_notional: Annotated[str | None, typer.Option(help="Policy: most notional traded a day")] = None,
    max_daily_loss: Annotated[str | None, typer.Option(help="Policy: most realised loss a day")] = None,
    price_band_pct: Annotated[
        str | None, typer.Option(help="Policy: limit price at most N % from last")
    ] = None,
    orders_per_second: Annotated[str | None, typer.Option(help="Policy: order rate")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Issue a Bastion key.  Ed25519: Bastion stores only the public key.  HMAC: the secret is
    printed once and stored only sealed by the vault.  The policy flags set the common limits
    of the key's policy (``bastion policy set`` sets any of them)."""
    path = _home(home)
    if alg not in ("ed25519", "hmac"):
        _fail("--alg is ed25519 or hmac", as_json)
    if alg == "ed25519" and (public_key is None) == (not generate):
        _fail("give exactly one of --public-key FILE or --generate", as_json)
    if alg == "hmac" and (public_key is not None or generate):
        _fail("an hmac key has no key pair: drop --public-key and --generate", as_json)
    try:
        scope_set = parse_scopes(scopes)
    except ValueError as exc:
        _fail(str(exc), as_json)
    limits: dict[str, object] = {
        "max_order_quantity": max_order_quantity,
        "max_order_notional": max_order_notional,
        "max_open_orders": max_open_orders,
        "max_position": max_position,
        "max_daily_notional": max_daily_notional,
        "max_daily_loss": max_daily_loss,
        "price_band_pct": price_band_pct,
        "orders_per_second": orders_per_second,
    }
    if symbols is not None:
        limits["symbols"] = [x.strip() for x in symbols.split(",") if x.strip()]
    limits = {k: v for k, v in limits.items() if v is not None}
    try:
        policy = document_from(limits) if limits else None  # refused before any key is issued
    except BastionError as exc:
        _fail(str(exc), as_json)
    try:
        lifetime = _parse_duration(expires_in)
        private = None
        pub = None
        if public_key is not None:
            pub = keyfmt.load_ed25519_public(public_key.read_bytes())
        elif generate:
            private = keyfmt.generate_ed25519()
            pub = private.public_key()

        async def issue(s: Services) -> tuple[KeyRecord, str | None]:
            issued = await s.create_key(
                account=account,
                scopes=scope_set,
                public_key=pub,
                lifetime=lifetime,
                label=label,
                allowed_cidrs=tuple(allow_ip or ()),
            )
            if policy is not None:
                await s.set_policy(issued[0].key_id, policy, actor=_actor())
            return issued

        record, secret = _with_services(path, issue)
        if policy is not None:
            _tell_server(path, {"op": "reload_policies"})
        private_path = _save_private_key(path, record.key_id, private)
    except (BastionError, ValueError, OSError) as exc:
        _fail(str(exc), as_json)
    data: dict[str, Any] = {
        "key_id": record.key_id,
        "account": record.account,
        "alg": record.alg,
        "scopes": sorted(s.value for s in record.scopes),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
    }
    text = f"key {record.key_id} for account {record.account} ({', '.join(data['scopes'])})"
    _emit_issued(as_json, data, text, private_path, secret)


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="Only this account's keys")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """List keys (never any secret)."""
    try:
        records = _with_services(_home(home), lambda s: s.keys.list(account))
    except BastionError as exc:
        _fail(str(exc), as_json)
    now = SystemClock().now()
    rows: list[dict[str, Any]] = []
    for r in records:
        state = (
            "revoked" if r.revoked_at else ("expired" if r.expires_at and r.expires_at <= now else "active")
        )
        rows.append(
            {
                "key_id": r.key_id,
                "account": r.account,
                "alg": r.alg,
                "scopes": sorted(s.value for s in r.scopes),
                "state": state,
                "created_at": r.created_at.isoformat(),
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "label": r.label,
                "allowed_cidrs": list(r.allowed_cidrs),
                "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
                "last_used_ip": r.last_used_ip,
                "rotated_to": r.rotated_to,
            }
        )
    if as_json:
        typer.echo(json.dumps({"keys": rows}, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("key id", no_wrap=True)
    for title in ("account", "scopes", "state", "expires", "allowed from", "last used"):
        table.add_column(title)
    for row in rows:
        expires = (row["expires_at"] or "")[:16]
        last = f"{(row['last_used_at'] or '')[:19]} {row['last_used_ip'] or ''}".strip() or "never"
        allowed = ",".join(row["allowed_cidrs"]) or "anywhere"
        table.add_row(
            row["key_id"], row["account"], ",".join(row["scopes"]), row["state"], expires, allowed, last
        )
    Console().print(table)


@keys_app.command("update")
def keys_update(
    key_id: str,
    allow_ip: AllowIp = None,
    any_ip: Annotated[bool, typer.Option("--any-ip", help="Remove the allow-list")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Change a key's IP allow-list (takes effect on the next request)."""
    if bool(allow_ip) == any_ip:
        _fail("give --allow-ip CIDR (repeatable) or --any-ip", as_json)
    try:
        cidrs = _with_services(_home(home), lambda s: s.set_allowed_cidrs(key_id, tuple(allow_ip or ())))
    except (BastionError, ValueError) as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        {"key_id": key_id, "allowed_cidrs": list(cidrs)},
        f"key {key_id} allowed from {', '.join(cidrs) or 'anywhere'}",
    )


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    overlap: Annotated[str, typer.Option(help="How long the old key keeps working, e.g. 24h")] = "24h",
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="The successor's Ed25519 public key")
    ] = None,
    generate: Annotated[bool, typer.Option("--generate", help="Generate the successor's key pair")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Issue a successor with the same scopes and policy; both work until the overlap ends."""
    path = _home(home)
    if public_key is not None and generate:
        _fail("give at most one of --public-key or --generate", as_json)
    try:
        window = _parse_duration(overlap)
        private = keyfmt.generate_ed25519() if generate else None
        pub = (
            private.public_key()
            if private
            else (keyfmt.load_ed25519_public(public_key.read_bytes()) if public_key is not None else None)
        )
        record, secret = _with_services(path, lambda s: s.rotate_key(key_id, overlap=window, public_key=pub))
        private_path = _save_private_key(path, record.key_id, private)
    except (BastionError, ValueError, OSError) as exc:
        _fail(str(exc), as_json)
    data: dict[str, Any] = {"key_id": record.key_id, "rotated_from": key_id, "overlap": overlap}
    text = f"key {key_id} rotated to {record.key_id}; the old key stops after {overlap}"
    _emit_issued(as_json, data, text, private_path, secret)


@keys_app.command("revoke")
def keys_revoke(key_id: str, home: Home = None, as_json: Json = False) -> None:
    """Revoke a key at once; the next request signed with it is refused."""
    try:
        revoked = _with_services(_home(home), lambda s: s.revoke_key(key_id))
    except BastionError as exc:
        _fail(str(exc), as_json)
    if not revoked:
        _fail(f"no active key {key_id}", as_json)
    _emit(as_json, {"key_id": key_id, "revoked": True}, f"key {key_id} revoked")


@venues_app.command("add")
def venues_add(
    account: Annotated[str, typer.Option(help="Account the credential trades for")],
    venue: Annotated[str, typer.Option(help="Venue name")] = "paper",
    credentials_file: Annotated[
        str, typer.Option("--credentials-file", help="JSON file with api_key and api_secret, or - for stdin")
    ] = "-",
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Add a venue credential: audited with the venue, refused if it can withdraw or transfer,
    stored only sealed.  Never pass secrets on the command line."""
    try:
        raw = (
            sys.stdin.buffer.read(65_537) if credentials_file == "-" else Path(credentials_file).read_bytes()
        )
        row, warnings = _with_services(_home(home), lambda s: s.add_venue_credential(account, venue, raw))
    except (BastionError, OSError) as exc:
        _fail(str(exc), as_json)
    permissions = dataclasses.asdict(row.permissions)
    text = f"credential {row.id} added for {account} on {venue} (stored sealed)"
    for warning in warnings:
        text += f"\nwarning: {warning}"
    _emit(as_json, {"credential_id": row.id, "permissions": permissions, "warnings": warnings}, text)


@venues_app.command("remove")
def venues_remove(credential_id: str, home: Home = None, as_json: Json = False) -> None:
    """Remove a venue credential (revoke it at the venue first): its sealed secret is deleted."""
    try:
        row = _with_services(_home(home), lambda s: s.remove_venue_credential(credential_id, actor=_actor()))
    except BastionError as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        {"credential_id": row.id, "account": row.account, "removed": True},
        f"credential {row.id} of {row.account} on {row.venue} removed",
    )


@venues_app.command("list")
def venues_list(home: Home = None, as_json: Json = False) -> None:
    """List venue credentials: ids, fingerprints and permissions, never the secrets."""
    try:
        rows = _with_services(_home(home), lambda s: s.credentials.list())
    except BastionError as exc:
        _fail(str(exc), as_json)
    data = [
        {
            "credential_id": r.id,
            "account": r.account,
            "venue": r.venue,
            "api_key_fingerprint": r.fingerprint,
            "permissions": dataclasses.asdict(r.permissions),
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps({"credentials": data}, sort_keys=True))
        return
    for r in rows:
        flags = ", ".join(k for k, v in dataclasses.asdict(r.permissions).items() if v) or "no permissions"
        typer.echo(f"{r.id}  {r.account}  {r.venue}  key {r.fingerprint}  {flags}")


@vault_app.command("status")
def vault_status(home: Home = None, as_json: Json = False) -> None:
    """Master-key versions present, and the versions sealed secrets still need."""
    try:
        present, in_use = _with_services(_home(home), lambda s: s.vault_status())
    except BastionError as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        {"versions": present, "in_use": in_use, "current": max(present)},
        f"master keys: {present} (current {max(present)}); sealed secrets use {in_use or 'none'}",
    )


@vault_app.command("rotate-master")
def vault_rotate_master(
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted rotation")] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="keyfile or pkcs11 (default: the vault.provider setting)")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Create a new master-key version and re-seal every secret under it (Bastion keeps serving)."""
    try:
        report = _with_services(_home(home), lambda s: s.rotate_master(resume=resume, to=to))
    except BastionError as exc:
        _fail(str(exc), as_json)
    _emit(
        as_json,
        dataclasses.asdict(report),
        f"master key version {report.target_version}: re-sealed {report.resealed}, already current "
        f"{report.already_current}, skipped {report.skipped}; versions in use {report.versions_in_use}",
    )


@vault_app.command("retire")
def vault_retire(
    yes: Annotated[bool, typer.Option("--yes", help="Delete the unused master keyfiles")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Delete master keyfiles that no sealed secret needs any more (never the current one)."""
    try:
        unused = _with_services(_home(home), lambda s: s.retire_master_keys(confirm=yes))
    except BastionError as exc:
        _fail(str(exc), as_json)
    verb = "retired" if yes else "would retire (add --yes)"
    _emit(as_json, {"unused": unused, "retired": yes}, f"{verb}: {unused or 'nothing'}")


@app.command()
def doctor(home: Home = None, as_json: Json = False) -> None:
    """Audit this installation: permissions, TLS, master keys, keys, credentials, the ledger.
    Exit 1 if anything fails."""
    from bastion.doctor import Check, Level, file_checks, run_checks

    path = _home(home)
    try:
        checks = _with_services(path, run_checks)
    except BastionError as exc:
        if not (path / CONFIG_NAME).is_file():
            _fail(str(exc), as_json)
        # the services refused to start: report why, with what can be checked without them
        checks = file_checks(path)
        if not any(c.level is Level.FAIL for c in checks):  # else those say why
            checks.append(Check(Level.FAIL, "start-up", str(exc)[:300], "fix it, then run doctor again"))
    if as_json:
        typer.echo(json.dumps({"checks": [dataclasses.asdict(c) for c in checks]}, sort_keys=True))
    else:
        for check in checks:
            line = f"[{check.level.value:4}] {check.name}: {check.message}"
            typer.echo(
                line + (f"\n       fix: {check.fix}" if check.fix and check.level is not Level.OK else "")
            )
        failed = sum(c.level is Level.FAIL for c in checks)
        warned = sum(c.level is Level.WARN for c in checks)
        typer.echo(f"{failed} failed, {warned} warning(s), {len(checks) - failed - warned} ok")
    if any(c.level is Level.FAIL for c in checks):
        raise typer.Exit(1)


@app.command("scan")
def scan_command(
    path: Annotated[Path, typer.Argument(help="A bot's repository, directory or file")],
    as_json: Json = False,
) -> None:
    """Find credentials embedded in bot code and configuration: Bastion keys and secrets,
    exchange keys, private keys, cloud keys, high-entropy strings.  Exit 1 when anything is
    found (use it as a pre-commit hook); findings name the file, line and type, never the value."""
    from bastion.scanning.scan import scan

    if not path.exists():
        _fail(f"{path} does not exist", as_json)
    findings = scan(path)
    if as_json:
        typer.echo(json.dumps({"findings": [dataclasses.asdict(f) for f in findings]}, sort_keys=True))
    else:
        for finding in findings:
            typer.echo(f"{finding.path}:{finding.line}: {finding.type}")
        typer.echo(f"{len(findings)} finding(s)" if findings else "no credentials found")
    if findings:
        raise typer.Exit(1)


@policy_app.command("show")
def policy_show(
    target: Annotated[str, typer.Argument(help="A key id (bst_...) or an account name")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Show a key's or an account's policy document; for a key also its scopes and the
    effective policy (the account's defaults overlaid by the key's own document)."""
    try:
        shown = _with_services(_home(home), lambda s: s.show_policy(target))
    except BastionError as exc:
        _fail(str(exc), as_json)
    lines = [f"{shown['subject']} version {shown['version']}"]
    lines += [f"  v{h['version']} {h['at']} by {h['actor']}" for h in shown["history"]]
    if "scopes" in shown:
        lines.append(
            f"scopes: {', '.join(shown['scopes'])} (effective: {', '.join(shown['effective_scopes'])})"
        )
    document = shown.get("effective", shown["document"])
    label = "effective policy" if "effective" in shown else "policy"
    lines.append(f"{label}: " + (json.dumps(document, sort_keys=True) if document else "no limits set"))
    _emit(as_json, shown, "\n".join(lines))


@policy_app.command("set")
def policy_set(
    target: Annotated[str, typer.Argument(help="A key id (bst_...) or an account name")],
    file: Annotated[str, typer.Option("--file", help="YAML or JSON document, or - for stdin")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Change a policy: the fields in the file replace the stored ones, absent fields keep
    their values and null removes one.  The whole result is validated first (nothing changes
    if any field is wrong), stored as a new version and recorded in the ledger."""
    path = _home(home)
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        patch: PolicyDocument = parse_document(raw, filename=file)
        result = _with_services(path, lambda s: s.set_policy(target, patch, actor=_actor()))
        applied = _tell_server(path, {"op": "reload_policies"})
    except (BastionError, OSError) as exc:
        _fail(str(exc), as_json)
    result["running_server_updated"] = applied
    where = "; the running server applies it now" if applied else "; no server is running"
    _emit(as_json, result, f"{result['subject']} policy version {result['version']}{where}")


def _scope_of(key: str | None, account: str | None, everything: bool, as_json: bool) -> tuple[Level, str]:
    chosen = [(Level.KEY, key), (Level.ACCOUNT, account), (Level.GLOBAL, "" if everything else None)]
    given = [(level, subject) for level, subject in chosen if subject is not None]
    if len(given) != 1:
        _fail("give exactly one of --key KEY_ID, --account NAME or --global", as_json)
    return given[0][0], str(given[0][1])


KeyOpt = Annotated[str | None, typer.Option("--key", help="One key")]
AccountOpt = Annotated[str | None, typer.Option("--account", help="Every key of one account")]
GlobalOpt = Annotated[bool, typer.Option("--global", help="Every key of every account")]


def _killswitch(
    home: Path, level: Level, subject: str, state: TradingState, cancel_open: bool, as_json: bool
) -> None:
    request = {
        "op": "killswitch",
        "level": level.value,
        "subject": subject,
        "state": state.value,
        "cancel_open": cancel_open,
        "actor": _actor(),
    }
    try:
        report = control.call(home, request)
        if report is None:  # no server running: do it here (the venue's state is ours alone)
            report = _with_services(
                home,
                lambda s: s.set_trading_state(
                    level, subject, state, cancel_open=cancel_open, actor=str(request["actor"])
                ),
            )
            report["running_server"] = False
        else:
            report.pop("ok", None)
            report["running_server"] = True
    except BastionError as exc:
        _fail(str(exc), as_json)
    target = "everything" if level is Level.GLOBAL else f"{level.value} {subject}"
    lines = [f"{target}: {report['previous']} -> {report['state']}"]
    if cancel_open:
        lines.append(
            f"canceled {len(report['canceled'])} open order(s): {', '.join(report['canceled']) or '-'}"
        )
        if report["already_closed"]:
            lines.append(f"already closed: {', '.join(report['already_closed'])}")
        if report["not_canceled"]:
            lines.append(f"NOT canceled (venue never confirmed them): {', '.join(report['not_canceled'])}")
    _emit(as_json, report, "\n".join(lines))
    if cancel_open and report["not_canceled"]:
        raise typer.Exit(1)


@killswitch_app.command("on")
def killswitch_on(
    key: KeyOpt = None,
    account: AccountOpt = None,
    everything: GlobalOpt = False,
    cancel_open: Annotated[bool, typer.Option("--cancel-open", help="Also cancel every open order")] = False,
    reduce_only: Annotated[
        bool,
        typer.Option("--reduce-only", help="REDUCING instead of HALTED: only orders that shrink a position"),
    ] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Halt new orders at once (the next request sees it); cancels keep working."""
    level, subject = _scope_of(key, account, everything, as_json)
    state = TradingState.REDUCING if reduce_only else TradingState.HALTED
    _killswitch(_home(home), level, subject, state, cancel_open, as_json)


@killswitch_app.command("off")
def killswitch_off(
    key: KeyOpt = None,
    account: AccountOpt = None,
    everything: GlobalOpt = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Let trading resume at this level (other levels' states still apply)."""
    level, subject = _scope_of(key, account, everything, as_json)
    _killswitch(_home(home), level, subject, TradingState.ACTIVE, False, as_json)


@killswitch_app.command("status")
def killswitch_status(home: Home = None, as_json: Json = False) -> None:
    """Every level that is not active."""
    try:
        rows = _with_services(_home(home), lambda s: _states(s))
    except BastionError as exc:
        _fail(str(exc), as_json)
    data = {"states": [{"level": lv.value, "subject": sj, "state": st.value} for lv, sj, st in rows]}
    text = "\n".join(f"{lv.value} {sj or '*'}: {st.value}" for lv, sj, st in rows) or "all trading active"
    _emit(as_json, data, text)


async def _states(services: Services) -> list[tuple[Level, str, TradingState]]:
    return services.trading.not_active()


@ledger_app.command("verify")
def ledger_verify(
    home: Home = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Verify this export offline instead")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="With --export: the ledger's public key (PEM)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Check the ledger from its first entry to its signed heads: the hash chain, the RFC 9162
    tree's root at every signed head, and each head's signature.  Exit 1 naming the first bad
    entry (edited, deleted, reordered, truncated or forked).  With --export and --public-key,
    offline: nothing but that file and that key."""
    path = _home(home)

    async def online() -> Verified:
        # Only the database: verifying needs no master key, no venue, nothing secret.
        db = Database(database_url(path, load_settings(path)))
        try:
            store = SqlLedgerStore(db)
            rows: list[LedgerRow] = [row async for row in store.rows()]
            return verify_ledger(rows, await store.heads(), await public_keys(store))
        finally:
            await db.close()

    try:
        if export is not None:
            if public_key is None:
                _fail("--export needs --public-key (the ledger's, from 'bastion ledger public-key')", as_json)
            key = load_pem_public_key(public_key.read_bytes())
            if not isinstance(key, Ed25519PublicKey):
                _fail("the public key is not an Ed25519 key", as_json)
            rows, heads = read_export(export)
            result = verify_ledger(rows, heads, {h.key_version: key for h in heads})
        else:
            result = asyncio.run(online())
    except LedgerCorrupt as exc:
        _emit(
            as_json,
            {"ok": False, "first_bad_index": exc.index, "why": exc.why},
            f"ledger verification FAILED at entry {exc.index}: {exc.why}",
        )
        raise typer.Exit(1) from None
    except (BastionError, OSError, ValueError) as exc:
        _fail(str(exc), as_json)
    data = {
        "ok": True,
        "entries": result.entries,
        "head": result.chain_head.hex(),
        "root_hash": result.root.hex(),
        "signed_heads": result.heads,
        "signed_size": result.signed_size,
        "unsigned_tail": result.unsigned_tail,
    }
    tail = (
        f"; {result.unsigned_tail} newer entries not yet under a signed head" if result.unsigned_tail else ""
    )
    text = (
        f"ledger OK: {result.entries} entries, root {result.root.hex()}, {result.heads} signed heads verified"
    )
    _emit(as_json, data, text + tail)


@ledger_app.command("show")
def ledger_show(index: int, home: Home = None) -> None:
    """Print one entry as JSON, with its personal data opened (``[erased]`` once shredded)."""
    try:
        entry = _with_services(_home(home), lambda s: s.open_entry(index))
    except BastionError as exc:
        _fail(str(exc), False)
    typer.echo(json.dumps(entry, sort_keys=True))


@ledger_app.command("proof")
def ledger_proof(
    index: int,
    tree_size: Annotated[int | None, typer.Option("--tree-size", help="Default: the current size")] = None,
    home: Home = None,
) -> None:
    """An entry's inclusion proof (RFC 9162) in the tree of --tree-size entries, as JSON."""

    async def run(services: Services) -> dict[str, Any]:
        size = tree_size or (await services.ledger_store.current_tree())[0]
        found = await LedgerProofs(services.ledger, services.ledger_store).proof(index, size)
        if found is None:
            raise ConfigError(f"no entry {index} in a tree of {size} entries")
        _, leaf, proof = found
        return {"index": index, "tree_size": size, "leaf_hash": leaf.hex(), "proof": [p.hex() for p in proof]}

    try:
        typer.echo(json.dumps(_with_services(_home(home), run), sort_keys=True))
    except BastionError as exc:
        _fail(str(exc), False)


@ledger_app.command("consistency")
def ledger_consistency(first: int, second: int, home: Home = None) -> None:
    """The consistency proof (RFC 9162) between the trees of FIRST and SECOND entries, as JSON."""

    async def run(services: Services) -> dict[str, Any]:
        proof = await LedgerProofs(services.ledger, services.ledger_store).consistency(first, second)
        if proof is None:
            raise ConfigError(f"no consistency proof from {first} to {second} entries")
        roots = [(await services.ledger_store.root(n)).hex() for n in (first, second)]
        return {"first": first, "second": second, "roots": roots, "proof": [p.hex() for p in proof]}

    try:
        typer.echo(json.dumps(_with_services(_home(home), run), sort_keys=True))
    except BastionError as exc:
        _fail(str(exc), False)


@ledger_app.command("export")
def ledger_export(
    out: Annotated[Path, typer.Option("--out", help="File to write (JSON lines)")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Write every entry and signed head to a file that verifies offline with the public key."""
    path = _home(home)

    async def run(services: Services) -> int:
        await services.ledger.publish()  # so the export ends with a head over every entry
        rows = [row async for row in services.ledger_store.rows()]
        return write_export(out, rows, await services.ledger_store.heads())

    try:
        count = _with_services(path, run)
    except (BastionError, OSError) as exc:
        _fail(str(exc), as_json)
    _emit(as_json, {"out": str(out), "entries": count}, f"exported {count} entries to {out}")


@ledger_app.command("public-key")
def ledger_public_key(home: Home = None) -> None:
    """Print the ledger's signing public key (PEM): what auditors verify heads and receipts with."""

    async def run(services: Services) -> bytes:
        signer = services.ledger.signer
        if not isinstance(signer, LedgerSigner):
            raise ConfigError("the ledger has no signing key")
        return signer.public_pem()

    try:
        typer.echo(_with_services(_home(home), run).decode(), nl=False)
    except BastionError as exc:
        _fail(str(exc), False)


from bastion import cli_oversight as _oversight  # noqa: E402 - its commands join the app defined above

app.add_typer(_oversight.alerts_app, name="alerts")
app.add_typer(_oversight.fraud_app, name="fraud")
