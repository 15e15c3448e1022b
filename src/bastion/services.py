"""Builds Bastion's parts from settings: one place that wires ports to implementations."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.clock import SystemClock
from bastion.config import Settings
from bastion.crypto import keys as keyfmt
from bastion.crypto.httpsig import ED25519, HMAC_SHA256
from bastion.domain.addresses import parse_cidrs
from bastion.domain.credentials import audit
from bastion.domain.principals import Scope
from bastion.errors import BastionError, ConfigError
from bastion.ledger.writer import LedgerWriter
from bastion.pipeline.chain import Pipeline, Stage, build_stages
from bastion.ports import Clock, KeyRecord
from bastion.state.memory import MemoryNonceStore
from bastion.state.usage import KeyUsageRecorder
from bastion.store.db import Database, sqlite_url
from bastion.store.repos import (
    CredentialRow,
    SqlAccounts,
    SqlCredentialStore,
    SqlKeyStore,
    SqlLedgerStore,
    SqlOrderStore,
    SqlPaperStore,
    SqlSealedRows,
)
from bastion.vault.envelope import SealContext, master_version, seal_secret
from bastion.vault.keys import VaultKeySecrets
from bastion.vault.master import TokenKeys, create_next_keyfile, keyfile_versions, open_ring
from bastion.vault.rotation import RotationReport, reseal_all
from bastion.venues.paper.engine import PaperEngine
from bastion.venues.paper.venue import DEFAULT_EPOCH_US, DEFAULT_FUNDING, PaperVenue, build_markets

VAULT_DIR = "vault"
HSM_PIN_ENV = "BASTION_HSM_PIN"
PASSPHRASE_ENV = "BASTION_MASTER_PASSPHRASE"  # noqa: S105 - the variable's name, not its value


def open_token(settings: Settings, environ: Mapping[str, str]) -> TokenKeys | None:
    """The PKCS#11 token when one is configured (its PIN from BASTION_HSM_PIN), else None."""
    if not settings.vault.pkcs11_library:
        return None
    from bastion.vault.pkcs11 import Pkcs11Token

    return Pkcs11Token(
        settings.vault.pkcs11_library, settings.vault.pkcs11_label, environ.get(HSM_PIN_ENV, "")
    )


ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_KEY_LIFETIME = timedelta(days=90)


def database_url(home: Path, settings: Settings) -> str:
    return settings.database.url or sqlite_url((home / "bastion.db").resolve())


@dataclass
class Services:
    home: Path
    settings: Settings
    clock: Clock
    accounts: SqlAccounts
    keys: SqlKeyStore
    orders: SqlOrderStore
    ledger_store: SqlLedgerStore
    ledger: LedgerWriter
    venue: PaperVenue
    nonces: MemoryNonceStore
    db: Database
    key_secrets: VaultKeySecrets
    key_usage: KeyUsageRecorder
    credentials: SqlCredentialStore
    token: TokenKeys | None = None
    passphrase: bytes | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        home: Path,
        settings: Settings,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Services:
        clock = clock or SystemClock()
        environ = os.environ if environ is None else environ
        token = open_token(settings, environ)
        passphrase = environ.get(PASSPHRASE_ENV, "").encode() or None
        db = Database(database_url(home, settings))
        ledger_store = SqlLedgerStore(db)
        ledger = LedgerWriter(ledger_store, clock)
        paper = PaperEngine(
            build_markets(),
            bar_seconds=settings.paper.bar_seconds,
            epoch_us=DEFAULT_EPOCH_US,
            funding=DEFAULT_FUNDING,
        )
        keys = SqlKeyStore(db)
        return cls(
            home=home,
            settings=settings,
            clock=clock,
            accounts=SqlAccounts(db),
            keys=keys,
            orders=SqlOrderStore(db, ledger),
            ledger_store=ledger_store,
            ledger=ledger,
            venue=PaperVenue(paper, SqlPaperStore(db), clock),
            nonces=MemoryNonceStore(),
            db=db,
            key_secrets=VaultKeySecrets(open_ring(home / VAULT_DIR, token, passphrase=passphrase)),
            key_usage=KeyUsageRecorder(keys.record_usage),
            credentials=SqlCredentialStore(db),
            token=token,
            passphrase=passphrase,
        )

    async def start(self) -> None:
        await self.db.start()
        await self.ledger.start()
        await self.key_usage.start()
        await self.venue.start()

    async def close(self) -> None:
        await self.key_usage.close()
        await self.ledger.close()
        await self.db.close()
        if self.token is not None:
            self.token.close()

    def stages(self) -> tuple[Stage, ...]:
        return build_stages(
            keys=self.keys,
            nonces=self.nonces,
            orders=self.orders,
            venue=self.venue,
            ledger=self.ledger,
            clock=self.clock,
            replay_window_seconds=self.settings.auth.replay_window_seconds,
            venue_timeout_seconds=self.settings.paper.venue_timeout_seconds,
            key_secrets=self.key_secrets,
            key_usage=self.key_usage,
        )

    def pipeline(self) -> Pipeline:
        return Pipeline(self.stages(), self.ledger)

    # -- operator actions (CLI) -----------------------------------------------------------
    async def create_account(self, name: str) -> None:
        if ACCOUNT_NAME.fullmatch(name) is None:
            raise ConfigError(
                "account names are 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit"
            )
        if not await self.accounts.create(name, self.clock.now()):
            raise ConfigError(f"account {name!r} already exists")
        await self.venue.create_account(name)
        await self.ledger.append("account.created", {"account": name, "venue": self.venue.name})

    async def create_key(
        self,
        *,
        account: str,
        scopes: frozenset[Scope],
        public_key: Ed25519PublicKey | None = None,
        lifetime: timedelta = DEFAULT_KEY_LIFETIME,
        label: str = "",
        allowed_cidrs: tuple[str, ...] = (),
    ) -> tuple[KeyRecord, str | None]:
        """Issue a key: Ed25519 with the given public key, or HMAC-SHA256 without one.  For an
        HMAC key the secret is returned here, once, and stored only sealed by the vault."""
        if not await self.accounts.exists(account):
            raise ConfigError(f"no account {account!r}: create it with 'bastion accounts create'")
        if lifetime <= timedelta(0):
            raise ConfigError("a key's lifetime must be positive")
        now = self.clock.now()
        key_id = keyfmt.new_key_id()
        secret: str | None = None
        sealed: bytes | None = None
        if public_key is None:
            secret = keyfmt.new_hmac_secret()
            sealed = self.key_secrets.seal_key_secret(account, key_id, secret.encode())
        record = KeyRecord(
            key_id=key_id,
            account=account,
            alg=ED25519 if public_key is not None else HMAC_SHA256,
            public_key=keyfmt.raw_public_key(public_key) if public_key is not None else b"",
            scopes=scopes,
            created_at=now,
            expires_at=now + lifetime,
            revoked_at=None,
            label=label,
            secret_sealed=sealed,
            allowed_cidrs=parse_cidrs(allowed_cidrs),
        )
        await self.keys.create(record)
        storage = "sealed by the vault" if sealed is not None else None
        await self.ledger.append(
            "key.created",
            {
                "key_id": record.key_id,
                "account": account,
                "alg": record.alg,
                "scopes": sorted(s.value for s in scopes),
                "expires_at": record.expires_at.isoformat() if record.expires_at else None,
                "public_key_sha256": _fingerprint(record.public_key) if public_key is not None else None,
                "secret": storage,
                "process": os.getpid(),
                "allowed_cidrs": list(record.allowed_cidrs),
            },
        )
        return record, secret

    async def rotate_key(
        self, key_id: str, *, overlap: timedelta, public_key: Ed25519PublicKey | None = None
    ) -> tuple[KeyRecord, str | None]:
        """Issue a successor with the same account, scopes, allow-list and label; the old key
        keeps working until the overlap ends (or its own expiry, if sooner), then stops."""
        old = await self.keys.get_key(key_id)
        now = self.clock.now()
        if (
            old is None
            or old.revoked_at is not None
            or (old.expires_at is not None and old.expires_at <= now)
        ):
            raise ConfigError(f"no active key {key_id}")
        if old.rotated_to is not None:
            raise ConfigError(f"key {key_id} was already rotated to {old.rotated_to}")
        if overlap < timedelta(0):
            raise ConfigError("the overlap cannot be negative")
        if (old.alg == ED25519) != (public_key is not None):
            raise ConfigError("an ed25519 key rotates to a new public key; an hmac key to a new secret")
        new_id = keyfmt.new_key_id()
        secret: str | None = None
        sealed: bytes | None = None
        if public_key is None:
            secret = keyfmt.new_hmac_secret()
            sealed = self.key_secrets.seal_key_secret(old.account, new_id, secret.encode())
        new = KeyRecord(
            key_id=new_id,
            account=old.account,
            alg=old.alg,
            public_key=keyfmt.raw_public_key(public_key) if public_key is not None else b"",
            scopes=old.scopes,
            created_at=now,
            expires_at=now + DEFAULT_KEY_LIFETIME,
            revoked_at=None,
            label=old.label,
            secret_sealed=sealed,
            allowed_cidrs=old.allowed_cidrs,
        )
        old_ends = now + overlap
        if old.expires_at is not None:
            old_ends = min(old_ends, old.expires_at)
        await self.keys.rotate(old, new, old_ends)
        storage = "sealed by the vault" if sealed is not None else None
        await self.ledger.append(
            "key.rotated",
            {
                "key_id": key_id,
                "successor": new_id,
                "account": old.account,
                "old_key_ends": old_ends.isoformat(),
                "secret": storage,
                "process": os.getpid(),
            },
        )
        return new, secret

    async def add_venue_credential(
        self, account: str, venue: str, raw: bytes
    ) -> tuple[CredentialRow, list[str]]:
        """Audit a venue credential with its venue, then store it sealed.  Refused (and the
        refusal recorded) when it can withdraw or transfer funds out; warnings otherwise."""
        if venue != self.venue.name:
            raise ConfigError(f"unknown venue {venue!r}; this installation has: {self.venue.name}")
        if not await self.accounts.exists(account):
            raise ConfigError(f"no account {account!r}")
        if len(raw) > 65_536:
            raise ConfigError("the credentials file is larger than 64 KiB")
        try:
            parsed = msgspec.json.decode(raw, type=CredentialFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # msgspec's message names the field, never its value
            raise ConfigError(f"the credentials file is not valid: {exc}") from None
        permissions = await self.venue.audit_credentials(msgspec.structs.asdict(parsed))
        refusals, warnings = audit(permissions)
        fingerprint = hashlib.sha256(parsed.api_key.encode()).hexdigest()[:16]
        facts: dict[str, object] = {
            "account": account,
            "venue": venue,
            "api_key_fingerprint": fingerprint,
            "permissions": dataclasses.asdict(permissions),
        }
        if refusals:
            await self.ledger.append("credential.refused", facts | {"reasons": refusals})
            raise CredentialRefused(
                "refused: this credential "
                + " and ".join(refusals)
                + ". Create an API key at the venue with "
                "trading permission only (no withdrawals, no transfers), restricted to Bastion's IP address."
            )
        row = CredentialRow(
            id="vc_" + keyfmt.new_key_id()[4:28],
            account=account,
            venue=venue,
            fingerprint=fingerprint,
            permissions=permissions,
            created_at=self.clock.now(),
        )
        sealed = seal_secret(
            self.key_secrets.ring,
            msgspec.json.encode(parsed),
            SealContext(account, row.id, f"venue-credential:{venue}"),
        )
        await self.credentials.add(row, sealed)
        storage = "sealed by the vault"
        await self.ledger.append(
            "credential.added",
            facts
            | {"credential_id": row.id, "secret": storage, "warnings": warnings, "process": os.getpid()},
        )
        return row, warnings

    async def rotate_master(self, *, resume: bool = False, to: str | None = None) -> RotationReport:
        """Create the next master-key version (unless ``resume``) in the keyfile or PKCS#11
        provider (``to``, default the settings' provider) and re-seal every secret under it.
        Safe to interrupt: run again with ``resume`` to finish."""
        directory = self.home / VAULT_DIR
        provider = to or self.settings.vault.provider
        if provider not in ("keyfile", "pkcs11"):
            raise ConfigError("master keys live in the keyfile or pkcs11 provider")
        if not resume:
            version = max(self.key_secrets.ring.versions) + 1
            if provider == "pkcs11":
                if self.token is None:
                    raise ConfigError("no PKCS#11 token configured (vault.pkcs11_library)")
                self.token.create(version)
            else:
                create_next_keyfile(directory, version, self.passphrase)
            await self.ledger.append("vault.master_created", {"version": version, "provider": provider})
        ring = open_ring(directory, self.token, passphrase=self.passphrase)
        self.key_secrets = VaultKeySecrets(ring)
        report = await reseal_all(ring, SqlSealedRows(self.db), self.ledger)
        await self.ledger.append("vault.rotated", dataclasses.asdict(report))
        return report

    async def retire_master_keys(self, *, confirm: bool) -> list[int]:
        """Keyfile master-key versions no sealed value needs (never the current one); deleted
        if ``confirm``.  Keys in an HSM are retired with the HSM's own tools."""
        present, in_use = await self.vault_status()
        files = keyfile_versions(self.home / VAULT_DIR)
        unused = [v for v in files if v not in in_use and v != max(present)]
        if confirm and unused:
            for version in unused:
                (self.home / VAULT_DIR / f"master-{version}.key").unlink()
            await self.ledger.append("vault.retired", {"versions": unused})
        return unused

    async def vault_status(self) -> tuple[list[int], list[int]]:
        """(master-key versions present in any provider, versions that sealed values still need)."""
        rows = await SqlSealedRows(self.db).sealed_rows()
        present = set(keyfile_versions(self.home / VAULT_DIR))
        if self.token is not None:
            present |= set(self.token.keys())
        return sorted(present), sorted({master_version(r.sealed) for r in rows})

    async def set_allowed_cidrs(self, key_id: str, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        parsed = parse_cidrs(cidrs)
        if not await self.keys.set_allowed_cidrs(key_id, parsed):
            raise ConfigError(f"no key {key_id}")
        await self.ledger.append("key.updated", {"key_id": key_id, "allowed_cidrs": list(parsed)})
        return parsed

    async def revoke_key(self, key_id: str) -> bool:
        revoked = await self.keys.revoke(key_id, self.clock.now())
        if revoked:
            await self.ledger.append("key.revoked", {"key_id": key_id})
        return revoked


class CredentialFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A venue credential as the operator hands it over (file or stdin, never argv)."""

    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    api_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    passphrase: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    # The paper venue only: the permission report it should simulate (Binance-style).
    paper_api_restrictions: dict[str, object] | None = None


class CredentialRefused(BastionError):
    """A venue credential failed the permission audit; nothing was stored."""


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
