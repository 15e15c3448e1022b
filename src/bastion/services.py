"""Builds Bastion's parts from settings: one place that wires ports to implementations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.alerts.alert import Alert, Severity
from bastion.alerts.dispatch import AlertDispatcher
from bastion.clock import SystemClock
from bastion.config import Settings
from bastion.crypto import keys as keyfmt
from bastion.crypto.httpsig import ED25519, HMAC_SHA256
from bastion.domain.addresses import parse_cidrs
from bastion.domain.credentials import audit
from bastion.domain.orders import VenueOrder
from bastion.domain.policy import EMPTY, PolicyDocument, document_from, document_hash, merge, to_mapping
from bastion.domain.principals import Principal, Scope
from bastion.domain.trading import Level, TradingState
from bastion.errors import BastionError, ConfigError, VenueError, VenueRejected
from bastion.fraud.engine import Assessment, FraudEngine
from bastion.injection import inspect_text
from bastion.ledger.service import LedgerProofs
from bastion.ledger.signer import load_signer
from bastion.ledger.writer import LedgerWriter
from bastion.metrics import Metrics
from bastion.oversight import Oversight
from bastion.pipeline.chain import Pipeline, Stage, build_stages
from bastion.pipeline.fraud import FraudCheck
from bastion.pipeline.ratelimit import RateLimit
from bastion.pipeline.shield import Shield, ended_facts
from bastion.ports import Clock, KeyRecord, OrderRecord, OrderState, RowConflict, TradingVenue
from bastion.risk.book import ExposureBook
from bastion.risk.engine import RiskEngine
from bastion.state.fraud import FraudMemory
from bastion.state.memory import MemoryNonceStore
from bastion.state.policies import PolicyCache, account_subject, key_subject
from bastion.state.ratelimit import MemoryRateStore, RateStore, RedisRateStore
from bastion.state.trading import TradingStates
from bastion.state.usage import KeyUsageRecorder
from bastion.store.db import Database, sqlite_url
from bastion.store.fraud_repos import SqlAlertSinks, SqlFraudStore
from bastion.store.repos import (
    CredentialRow,
    SqlAccounts,
    SqlCredentialStore,
    SqlKeyStore,
    SqlLedgerStore,
    SqlOrderStore,
    SqlPaperStore,
    SqlPolicyStore,
    SqlSealedRows,
    SqlSubjectKeys,
    SqlTradingStateStore,
)
from bastion.vault.envelope import SealContext, VaultError, master_version, open_secret, seal_secret
from bastion.vault.keys import VaultKeySecrets
from bastion.vault.master import TokenKeys, create_next_keyfile, keyfile_versions, open_ring
from bastion.vault.rotation import RotationReport, reseal_all
from bastion.vault.subjects import SubjectKeys
from bastion.venues.binance.venue import BinanceVenue, CredentialSource, VenueKey
from bastion.venues.http import transport_for
from bastion.venues.paper.engine import PaperEngine
from bastion.venues.paper.venue import DEFAULT_EPOCH_US, DEFAULT_FUNDING, PaperVenue, build_markets

VAULT_DIR = "vault"
HSM_PIN_ENV = "BASTION_HSM_PIN"
PASSPHRASE_ENV = "BASTION_MASTER_PASSPHRASE"  # noqa: S105 - the variable's name, not its value  # nosec B105
log = structlog.get_logger("bastion.services")
STATE_WATCH_SECONDS = 1.0  # how often a server re-reads stored policies and trading states
LEARN_SECONDS = 0.05  # how often the fraud model learns what the stage queued
LEARN_SLICE = 64  # orders learned between two chances for requests to run (under 1 ms)
NOTIFY_SECONDS = 15.0  # a CLI command waits at most this long for its alert to go out


def _tree_size(store: SqlLedgerStore) -> int:
    head = store.tree_head()
    return 0 if head is None else head[0]


def _delivered(metrics: Metrics, alert: Alert, seconds: float) -> None:
    metrics.alerts.labels(alert.rule, "delivered").inc()
    metrics.alert_latency.observe(seconds)


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
    venue: TradingVenue
    nonces: MemoryNonceStore
    db: Database
    key_secrets: VaultKeySecrets
    key_usage: KeyUsageRecorder
    credentials: SqlCredentialStore
    policy_store: SqlPolicyStore
    state_store: SqlTradingStateStore
    policies: PolicyCache
    trading: TradingStates
    risk: RiskEngine
    shield: Shield
    rate_store: RateStore
    rate_fallback: MemoryRateStore
    personal: SubjectKeys
    fraud_store: SqlFraudStore
    fraud_memory: FraudMemory
    fraud_engine: FraudEngine
    alerts: AlertDispatcher
    oversight: Oversight
    metrics: Metrics
    token: TokenKeys | None = None
    passphrase: bytes | None = dataclasses.field(default=None, repr=False)
    _watch: asyncio.Task[None] | None = dataclasses.field(default=None, repr=False)
    _learn: asyncio.Task[None] | None = dataclasses.field(default=None, repr=False)
    _fraud_stage: FraudCheck | None = dataclasses.field(default=None, repr=False)
    _tasks: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set, repr=False)
    _serving: bool = dataclasses.field(default=False, repr=False)
    _policy_reload: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock, repr=False)

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
        keys = SqlKeyStore(db)
        venue = _venue(settings, db, clock, lambda account: services.venue_key(account))
        key_secrets = VaultKeySecrets(open_ring(home / VAULT_DIR, token, passphrase=passphrase))
        limits = settings.ratelimit
        rate_store: RateStore = (
            RedisRateStore(limits.redis_url, timeout=limits.redis_timeout_seconds)
            if limits.backend == "redis"
            else MemoryRateStore(clock)
        )
        trading = TradingStates()
        shield = Shield(settings.shield, clock, ledger)
        fraud_store = SqlFraudStore(db, ledger)
        fraud_memory = FraudMemory(fraud_store)
        metrics = Metrics(
            trading, ledger_size=lambda: _tree_size(ledger_store), in_flight=lambda: shield.in_flight
        )
        a = settings.alerts
        dispatcher = AlertDispatcher(
            clock,
            dedupe_seconds=a.dedupe_seconds,
            max_per_window=a.max_per_window,
            window_seconds=a.window_seconds,
            attempts=a.attempts,
            backoff_seconds=a.backoff_seconds,
            on_delivered=lambda alert, sink, seconds: _delivered(metrics, alert, seconds),
            on_failed=lambda alert, sink, why: metrics.alerts.labels(alert.rule, "failed").inc(),
        )
        services = cls(
            home=home,
            settings=settings,
            clock=clock,
            accounts=SqlAccounts(db),
            keys=keys,
            orders=SqlOrderStore(db, ledger),
            ledger_store=ledger_store,
            ledger=ledger,
            venue=venue,
            nonces=MemoryNonceStore(),
            db=db,
            key_secrets=key_secrets,
            key_usage=KeyUsageRecorder(keys.record_usage),
            credentials=SqlCredentialStore(db),
            policy_store=SqlPolicyStore(db, ledger),
            state_store=SqlTradingStateStore(db, ledger),
            policies=PolicyCache(reload=lambda: services.reload_policies()),
            trading=trading,
            risk=RiskEngine(ExposureBook(), venue),
            shield=shield,
            rate_store=rate_store,
            rate_fallback=MemoryRateStore(clock),
            personal=SubjectKeys(SqlSubjectKeys(db), key_secrets.ring),
            fraud_store=fraud_store,
            fraud_memory=fraud_memory,
            fraud_engine=FraudEngine(settings.fraud),
            alerts=dispatcher,
            oversight=Oversight(
                a,
                clock,
                lambda: services.key_secrets.ring,
                SqlAlertSinks(db, ledger),
                fraud_store,
                fraud_memory,
                dispatcher,
                ledger,
                (settings.fraud.ipv4_prefix, settings.fraud.ipv6_prefix),
            ),
            metrics=metrics,
            token=token,
            passphrase=passphrase,
        )
        venue.subscribe(services.on_venue_order)
        venue.subscribe(services.fraud_engine.on_venue_order)
        venue.subscribe(metrics.on_venue_order)
        return services

    async def venue_key(self, account: str) -> VenueKey | None:
        """``account``'s newest credential for this venue, opened from the vault for one call."""
        found = await self.credentials.newest_sealed(account, self.venue.name)
        if found is None:
            return None
        credential_id, sealed = found
        context = SealContext(account, credential_id, f"venue-credential:{self.venue.name}")
        try:
            parsed = msgspec.json.decode(
                open_secret(self.key_secrets.ring, sealed, context), type=CredentialFile
            )
        except (VaultError, msgspec.DecodeError, msgspec.ValidationError):
            # a sealed row that does not open is tampering or a lost master key: fail closed
            log.error("venue_credential_unreadable", account=account, credential_id=credential_id)
            raise VenueError("VENUE_CREDENTIAL_UNREADABLE") from None
        return VenueKey(parsed.api_key, parsed.api_secret.encode())

    def on_venue_order(self, account: str, order: VenueOrder) -> None:
        """The venue's order reports feed the risk book (fills, closes)."""
        instrument = self.venue.instrument(order.symbol)
        try:
            self.risk.book.on_venue_order(
                account, order, self.clock.now(), instrument.quote if instrument else ""
            )
        except Exception:  # the book must never break the venue call that reported the change
            log.exception("risk_book_update_failed", account=account, symbol=order.symbol)

    async def start(self) -> None:
        await self.db.start()
        # the ledger signs its tree heads with a key the vault keeps sealed
        self.ledger.signer = await load_signer(self.ledger_store, self.key_secrets.ring, self.clock.now())
        await self.ledger.start()
        await self.key_usage.start()
        await self.venue.start()
        await self.reload_policies()
        await self.reload_trading_states()
        await self.fraud_memory.start(flush_loop=False)

    async def reload_trading_states(self) -> None:
        # into the object the risk stage already holds: it must never be replaced
        generation = self.trading.generation
        rows = await self.state_store.all()
        if self.trading.generation != generation:
            return  # changed while we read: what we read may be older than what is in force
        self.trading.replace_all((Level(lv), subject, TradingState(st)) for lv, subject, st in rows)

    async def start_serving(self) -> None:
        """What only a serving process needs: market data, the risk book rebuilt from the
        stored orders, and a watch on stored policies and trading states (changes this
        process was not told of)."""
        await self.venue.serve()
        await self._rebuild_book()
        self._watch = asyncio.create_task(self._watch_state(), name="policy-watch")
        self._learn = asyncio.create_task(self._learn_loop(), name="fraud-learning")
        await self.fraud_memory.start_flushing()
        await self.oversight.reload_sinks()
        await self.alerts.start()
        self._serving = True
        # What start-up built lives as long as the process: keep it out of the cyclic
        # collector's way, so a full collection does not walk it on the request path.
        gc.collect()
        gc.freeze()

    async def _learn_loop(self) -> None:
        """The fraud model learns here, off the request path (scoring stays inline).  It runs
        on the event loop, so it learns in slices of ``LEARN_SLICE`` orders (about 12 µs each)
        and lets requests in between: a backlog never stalls the loop for more than a slice."""
        baselines = self.fraud_engine.baselines
        while True:
            learned = 0
            try:
                learned = baselines.learn_pending(LEARN_SLICE)
            except Exception:
                log.exception("fraud_learning_failed")
            # a full slice: more may wait, so only let requests in; otherwise rest a while
            await asyncio.sleep(0 if learned == LEARN_SLICE else LEARN_SECONDS)

    async def _watch_state(self) -> None:
        stamp = await self.policy_store.stamp()
        while True:
            await asyncio.sleep(STATE_WATCH_SECONDS)
            try:
                current = await self.policy_store.stamp()
                if current != stamp:
                    await self.reload_policies()
                    stamp = current
                await self.reload_trading_states()
                if isinstance(self.rate_store, RedisRateStore) and not self.rate_store.healthy:
                    await self.rate_store.ping()
                for ended in self.shield.sweep():
                    await self.ledger.append("shield.ban_ended", ended_facts(ended))
            except Exception:  # keep watching; the control socket still delivers changes
                log.exception("state_watch_failed")

    async def _rebuild_book(self) -> None:
        """The risk book, and the fraud stage's view of what rests (self-match prevention),
        from the stored orders."""
        now = self.clock.now()
        book = self.risk.book
        for record in await self.orders.all_records():
            instrument = self.venue.instrument(record.request.symbol)
            quote = instrument.quote if instrument else ""
            snapshot = record.snapshot
            if snapshot is not None:
                book.on_venue_order(record.account, snapshot, now, quote, key_id=record.key_id)
            elif record.state is OrderState.PENDING:  # the venue may hold it: reserve, conservatively
                reference = self.venue.quote(record.request.symbol)
                price = record.request.price or (reference.last if reference else Decimal(0))
                book.reserve(record.key_id, record.account, quote, record.request, price, now)
            else:
                continue
            if snapshot is None or snapshot.status.is_open:
                self.fraud_engine.restore_order(
                    key_id=record.key_id,
                    account=record.account,
                    owner=await self.fraud_memory.owner(record.account),
                    request=record.request,
                    placed_at=record.created_at,
                    filled=snapshot.filled_quantity if snapshot is not None else Decimal(0),
                )

    async def reload_policies(self) -> None:
        # one at a time, so a slow read can never replace what a later one applied
        async with self._policy_reload:
            stored = await self.policy_store.current()
            self.policies.replace({s: (v, document_from(d)) for s, (v, d) in stored.items()})

    def health(self) -> tuple[str, dict[str, str]]:
        """What ``/healthz`` reports: "ok", or "degraded" with what is not ok."""
        checks: dict[str, str] = {}
        if isinstance(self.rate_store, RedisRateStore) and not self.rate_store.healthy:
            checks["ratelimit"] = f"redis unreachable ({self.rate_store.last_error}): orders refused"
        return ("degraded" if checks else "ok"), checks

    async def close(self) -> None:
        if isinstance(self.rate_store, RedisRateStore):
            await self.rate_store.close()
        for task in (self._watch, self._learn, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch = self._learn = None
        await self.venue.close()
        await self.alerts.close()
        await self.fraud_memory.close()
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
            risk=self.risk,
            policies=self.policies,
            trading_states=self.trading,
            shield=self.shield,
            ratelimit=RateLimit(self.rate_store, self.rate_fallback, self.policies, self.settings.ratelimit),
            proofs=LedgerProofs(self.ledger, self.ledger_store),
            key_secrets=self.key_secrets,
            key_usage=self.key_usage,
            fraud=self.fraud_stage(),
        )

    def fraud_stage(self) -> FraudCheck:
        """The one fraud stage of this process (its observer sees every verdict)."""
        if self._fraud_stage is None:
            self._fraud_stage = FraudCheck(
                self.fraud_engine,
                self.fraud_memory,
                self.venue,
                self.clock,
                alert=self.submit_alert,
                halt=self.fraud_halt,
                on_decision=self._count_decision,
            )
        return self._fraud_stage

    def pipeline(self, stages: tuple[Stage, ...] | None = None) -> Pipeline:
        return Pipeline(
            stages if stages is not None else self.stages(),
            self.ledger,
            self.personal,
            observers=(self.fraud_stage().observe,),
            timer=self.metrics,
            clock=time.perf_counter,
        )

    def _count_decision(self, assessment: Assessment) -> None:
        self.metrics.fraud_decided(assessment.action.value, [s.rule for s in assessment.signals])

    async def notify(
        self, rule: str, *, action: str, reason: str, key_id: str | None, account: str | None
    ) -> None:
        """Tell the operators (every alert sink) of a security-relevant change: queued in a
        serving process, sent before the command returns in a CLI process."""
        alert = Alert(
            rule=rule,
            severity=Severity.WARNING,
            key_id=key_id,
            account=account,
            action=action,
            reason=reason[:500],
            time=self.clock.now(),
            ledger_index=None,
        )
        if self._serving:
            self.submit_alert(alert)
            return
        try:
            self.alerts.set_sinks(await self.oversight.load_sinks())
            results = await asyncio.wait_for(self.alerts.send_now(alert), NOTIFY_SECONDS)
            for sink, error in results:
                if error is not None:
                    log.error("notify_failed", rule=rule, sink=sink, error=error[:200])
        except Exception:  # the change stands; the ledger has it
            log.exception("notify_failed", rule=rule)

    def submit_alert(self, alert: Alert) -> bool:
        queued = self.alerts.submit(alert)
        self.metrics.alerts.labels(alert.rule, "submitted" if queued else "suppressed").inc()
        return queued

    def fraud_halt(self, key_id: str, reason: str) -> None:
        """The fraud stage halts a key: in force at once here, then stored, recorded, and the
        key's open orders cancelled."""
        self.trading.set(Level.KEY, key_id, TradingState.HALTED)
        task = asyncio.get_running_loop().create_task(
            self.set_trading_state(
                Level.KEY, key_id, TradingState.HALTED, cancel_open=True, actor=f"fraud: {reason}"[:128]
            ),
            name=f"fraud-halt-{key_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._halt_done)

    def _halt_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fraud_halt_not_stored", error=type(task.exception()).__name__)

    # -- operator actions (CLI) -----------------------------------------------------------
    async def create_account(self, name: str, owner: str | None = None) -> None:
        """An account; ``owner`` groups accounts one person or firm holds (self-match
        prevention refuses orders that would trade between them).  By default its own owner."""
        for value in (name, owner or name):
            if ACCOUNT_NAME.fullmatch(value) is None:
                raise ConfigError(
                    "account and owner names are 1-63 of a-z, 0-9, '_' and '-', "
                    "starting with a letter or digit"
                )
        if not await self.accounts.create(name, self.clock.now()):
            raise ConfigError(f"account {name!r} already exists")
        if owner is not None and owner != name:
            await self.fraud_store.set_owner(name, owner)
        self.fraud_memory.set_owner(name, owner or name)
        await self.venue.create_account(name)
        await self.ledger.append(
            "account.created", {"account": name, "owner": owner or name, "venue": self.venue.name}
        )

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
        if label and (why := inspect_text(label)) is not None:
            raise ConfigError(f"--label refused: {why}")
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
        await self.fraud_store.copy_sightings(old.key_id, new.key_id, now)  # where the old key was used
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

    async def remove_venue_credential(self, credential_id: str, *, actor: str) -> CredentialRow:
        """Forget a venue credential (after revoking it at the venue): its sealed secret is
        deleted and the removal recorded."""
        row = await self.credentials.remove(credential_id)
        if row is None:
            raise ConfigError(f"no venue credential {credential_id}")
        facts = {"credential_id": row.id, "account": row.account, "venue": row.venue, "actor": actor}
        await self.ledger.append("credential.removed", facts | {"api_key_fingerprint": row.fingerprint})
        await self.notify(
            "credential.removed",
            action="revoke",
            reason=f"venue credential {row.id} ({row.venue}) removed by {actor}",
            key_id=None,
            account=row.account,
        )
        return row

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
        self.personal.set_ring(ring)
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

    # -- personal data ----------------------------------------------------------------------
    async def erase_account(self, name: str) -> dict[str, Any]:
        """Crypto-shred an account's personal data: revoke its keys and destroy its subject
        key.  Its ledger entries stay (and verify); what was sealed in them never opens again."""
        if not await self.accounts.exists(name):
            raise ConfigError(f"no account {name!r}")
        now = self.clock.now()
        revoked = [
            k.key_id for k in await self.keys.list() if k.account == name and await self.revoke_key(k.key_id)
        ]
        subject = account_subject(name)
        await self.personal.erase(subject, now)
        await self.keys.forget_usage(name)  # the last-use addresses outside the ledger go too
        await self.fraud_store.forget(name)  # and where its keys were used, for the fraud stage
        self.fraud_memory.forget_account(name)
        await self.ledger.append("subject.erased", {"subject": subject, "keys_revoked": revoked})
        return {"account": name, "subject": subject, "keys_revoked": revoked}

    async def open_entry(self, index: int) -> dict[str, Any]:
        """A ledger entry with its personal data opened (``[erased]`` once shredded)."""
        row = await self.ledger_store.entry(index)
        if row is None:
            raise ConfigError(f"no ledger entry {index}")
        entry: dict[str, Any] = msgspec.json.decode(row.body)
        data = entry.get("data", {})
        subject = data.get("subject")
        if isinstance(subject, str) and isinstance(data.get("client_ip"), str):
            data["client_ip"] = await self.personal.open(
                subject, "client_ip", data["client_ip"], self.clock.now()
            )
        return entry

    # -- policies ---------------------------------------------------------------------------
    async def policy_subject(self, target: str) -> tuple[str, KeyRecord | None]:
        """``bst_…`` names a key, anything else an account: (store subject, the key if one)."""
        if target.startswith(keyfmt.KEY_PREFIX):
            key = await self.keys.get_key(target)
            if key is None:
                raise ConfigError(f"no key {target}")
            return key_subject(target), key
        if not await self.accounts.exists(target):
            raise ConfigError(f"no account or key {target!r}")
        return account_subject(target), None

    async def show_policy(self, target: str) -> dict[str, Any]:
        subject, key = await self.policy_subject(target)
        version, document = self.policies.document(subject) or (0, EMPTY)
        shown: dict[str, Any] = {"subject": subject, "version": version, "document": to_mapping(document)}
        shown["history"] = [
            {"version": v, "at": at.isoformat(), "actor": actor}
            for v, at, actor in await self.policy_store.history(subject)
        ]
        if key is not None:
            shown["scopes"] = sorted(s.value for s in key.scopes)
            principal = Principal(key.key_id, key.account, key.scopes)
            policy = self.policies.for_principal(principal)
            shown["account"] = key.account
            shown["effective_scopes"] = sorted(s.value for s in policy.scopes)
            account_doc = self.policies.document(account_subject(key.account))
            merged = merge(account_doc[1] if account_doc else EMPTY, document)
            shown["effective"] = to_mapping(merged)
        return shown

    async def set_policy(self, target: str, patch: PolicyDocument, *, actor: str) -> dict[str, Any]:
        """Apply a (partial) document to a key's or account's policy: validated whole, stored
        as a new version, recorded in the ledger with who changed it."""
        subject, key = await self.policy_subject(target)
        await self.reload_policies()  # start from what is stored, not from this process's copy
        version, stored = self.policies.document(subject) or (0, EMPTY)
        also = None
        scopes = None if key is None else key.scopes
        if key is not None and isinstance(patch.scopes, list):
            scopes = frozenset(patch.scopes)
            if not scopes:
                raise ConfigError("a key needs at least one scope (read, trade, cancel)")
            also = self.keys.scopes_write(key.key_id, scopes)  # a key's scopes live with the key
            patch = msgspec.structs.replace(patch, scopes=msgspec.UNSET)
        merged = document_from(to_mapping(merge(stored, patch)))  # re-validated as a whole
        data = to_mapping(merged)
        entry: dict[str, object] = {
            "subject": subject,
            "actor": actor,
            "previous_version": version,
            "document": data,
            "document_sha256": document_hash(merged),
        }
        if scopes is not None:
            entry["scopes"] = sorted(s.value for s in scopes)
        try:
            new_version = await self.policy_store.put(
                subject, data, version, actor=actor, now=self.clock.now(), entry=entry, also=also
            )
        except RowConflict:
            raise ConfigError("the policy changed meanwhile; run the command again") from None
        await self.reload_policies()
        return {"subject": subject, "version": new_version, "document": data}

    # -- the kill switch --------------------------------------------------------------------
    async def set_trading_state(
        self, level: Level, subject: str, state: TradingState, *, cancel_open: bool, actor: str
    ) -> dict[str, Any]:
        """Set one level's trading state (stored and recorded first, then in force for the next
        request) and, with ``cancel_open``, cancel every open order in its scope at the venue."""
        if level is Level.KEY and await self.keys.get_key(subject) is None:
            raise ConfigError(f"no key {subject}")
        if level is Level.ACCOUNT and not await self.accounts.exists(subject):
            raise ConfigError(f"no account {subject!r}")
        if level is Level.GLOBAL:
            subject = ""
        previous = self.trading.get(level, subject)
        entry = {
            "level": level.value,
            "subject": subject,
            "state": state.value,
            "previous": previous.value,
            "cancel_open": cancel_open,
            "actor": actor,
        }
        await self.state_store.put(
            level.value, subject, state.value, actor=actor, now=self.clock.now(), entry=entry
        )
        self.trading.set(level, subject, state)
        if state is not TradingState.ACTIVE and not actor.startswith("fraud:"):  # fraud halts alert already
            account = subject if level is Level.ACCOUNT else None
            if level is Level.KEY:
                key = await self.keys.get_key(subject)
                account = key.account if key is not None else None  # who the operator must call
            await self.notify(
                "killswitch.on",
                action=state.value,
                reason=f"{level.value} {subject or '*'} set to {state.value} by {actor}",
                key_id=subject if level is Level.KEY else None,
                account=account,
            )
        report: dict[str, Any] = {"level": level.value, "subject": subject, "state": state.value}
        report["previous"] = previous.value
        if cancel_open:
            report |= await self.cancel_open_orders(
                account=subject if level is Level.ACCOUNT else None,
                key_id=subject if level is Level.KEY else None,
                reason=f"killswitch {level.value}",
            )
        return report

    async def cancel_open_orders(
        self, *, account: str | None, key_id: str | None, reason: str
    ) -> dict[str, Any]:
        """Cancel at the venue every open order in scope; what was cancelled and what was not."""
        canceled: list[str] = []
        not_open: list[str] = []
        failed: list[str] = []
        for record in await self.orders.open_records(account=account, key_id=key_id):
            if record.venue_order_id is None:
                failed.append(record.id)  # never confirmed by the venue: nothing to cancel there yet
                continue
            try:
                order = await self.venue.cancel(record.account, record.venue_order_id)
                kind = "order.canceled"
                canceled.append(record.id)
            except VenueRejected:
                found = await self.venue.order(record.account, record.venue_order_id)
                not_open.append(record.id)
                if found is None:
                    continue
                order, kind = found, "order.update"
            except BastionError:
                failed.append(record.id)
                continue
            await self._store_snapshot(record, order, kind, reason)
        return {"canceled": canceled, "already_closed": not_open, "not_canceled": failed}

    async def _store_snapshot(self, record: OrderRecord, order: VenueOrder, kind: str, reason: str) -> None:
        record.snapshot = order
        record.updated_at = self.clock.now()
        facts = {
            "order_id": record.id,
            "account": record.account,
            "venue_order_id": order.venue_order_id,
            "status": order.status.value,
            "by": reason,
        }
        await self.orders.save(record, (kind, facts))

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the control socket serves (``control.py``)."""
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "reload_policies":
            await self.reload_policies()
            return {}
        if op == "reload_alerts":
            return {"sinks": await self.oversight.reload_sinks()}
        if op == "forget_subject":
            self.personal.forget(str(request.get("subject") or ""))
            return {}
        if op == "killswitch":
            try:
                level = Level(str(request.get("level")))
                state = TradingState(str(request.get("state")))
            except ValueError:
                raise ConfigError("level or state is not valid") from None
            return await self.set_trading_state(
                level,
                str(request.get("subject") or ""),
                state,
                cancel_open=bool(request.get("cancel_open")),
                actor=str(request.get("actor") or "unknown")[:128],
            )
        raise ConfigError(f"unknown control operation {str(op)[:40]!r}")

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
            key = await self.keys.get_key(key_id)
            await self.notify(
                "key.revoked",
                action="revoke",
                reason=f"key {key_id} was revoked by an operator",
                key_id=key_id,
                account=key.account if key is not None else None,
            )
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


def _venue(settings: Settings, db: Database, clock: Clock, keys: CredentialSource) -> TradingVenue:
    """The venue ``[venue] kind`` names; a real venue's URL and network are checked here, so a
    bad setting fails at start-up."""
    chosen = settings.venue
    if chosen.kind == "paper":
        engine = PaperEngine(
            build_markets(),
            bar_seconds=settings.paper.bar_seconds,
            epoch_us=DEFAULT_EPOCH_US,
            funding=DEFAULT_FUNDING,
        )
        return PaperVenue(engine, SqlPaperStore(db), clock)
    transport = transport_for(chosen)
    return BinanceVenue(chosen, transport, keys, clock)
