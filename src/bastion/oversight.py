"""The operator's side of fraud detection: alert sinks, held orders, trusted addresses.

``bastion alerts ...`` and ``bastion fraud ...`` call these; every change is a ledger entry
with who made it.  A sink's configuration is sealed by the vault (``alerts/configured.py``);
its target is checked against SSRF when it is added and again at every connection.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import structlog

from bastion.alerts import configured
from bastion.alerts.alert import Alert, Severity
from bastion.alerts.dispatch import AlertDispatcher
from bastion.alerts.sinks import LogSink
from bastion.alerts.ssrf import TargetPolicy
from bastion.config import AlertSettings
from bastion.errors import AlertError, ConfigError, StoreError
from bastion.fraud.networks import network_of
from bastion.ports import Clock, HoldRecord, HoldStatus, Ledger, RowConflict
from bastion.state.fraud import FraudMemory
from bastion.store.fraud_repos import SinkRow, SqlAlertSinks, SqlFraudStore
from bastion.store.repos import alert_sink_context
from bastion.vault.envelope import open_secret, seal_secret
from bastion.vault.master import MasterKeyRing

log = structlog.get_logger("bastion.alerts")


def new_sink_id() -> str:
    return "sink_" + secrets.token_hex(8)


class Oversight:
    def __init__(
        self,
        settings: AlertSettings,
        clock: Clock,
        ring: Callable[[], MasterKeyRing],
        sinks: SqlAlertSinks,
        fraud: SqlFraudStore,
        memory: FraudMemory,
        dispatcher: AlertDispatcher,
        ledger: Ledger,
        prefixes: tuple[int, int] = (24, 48),
    ) -> None:
        self.settings = settings
        self.policy = TargetPolicy(settings.allowed_private_networks)
        self._clock = clock
        self._ring = ring
        self._sinks = sinks
        self._fraud = fraud
        self._memory = memory
        self.dispatcher = dispatcher
        self._ledger = ledger
        self._prefixes = prefixes  # the fraud stage's IPv4 and IPv6 network prefixes

    # -- sinks ----------------------------------------------------------------------------
    async def add_sink(
        self, config: configured.SinkConfig, *, allow_private: bool, actor: str
    ) -> dict[str, Any]:
        """Check, seal and store a sink.  A webhook gets a fresh signing secret, returned once."""
        secret: str | None = None
        if config.kind == "webhook":
            secret = secrets.token_hex(32)
            config = configured.SinkConfig(kind="webhook", url=config.url, secret=secret)
        sink = configured.build_sink(
            config,
            self.policy,
            allow_private=allow_private,
            clock=self._clock,
            timeout=self.settings.timeout_seconds,
        )
        if config.kind in ("webhook", "slack"):
            await self.policy.check_url_resolving(config.url, allow_private=allow_private)
        else:
            await self.policy.resolve(config.host, config.port, allow_private=allow_private)
        sink_id = new_sink_id()
        sealed = seal_secret(self._ring(), configured.encode(config), alert_sink_context(sink_id))
        row = SinkRow(sink_id, config.kind, sink.name, sealed, allow_private, self._clock.now())
        await self._sinks.add(
            row,
            {
                "sink_id": sink_id,
                "kind": config.kind,
                "target": sink.name,
                "allow_private": allow_private,
                "actor": actor,
            },
        )
        shown: dict[str, Any] = {"id": sink_id, "kind": config.kind, "target": sink.name}
        if secret is not None:
            shown["secret"] = secret  # shown once: the receiver verifies signatures with it
        return shown

    async def list_sinks(self) -> list[dict[str, Any]]:
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "target": r.display,
                "allow_private": r.allow_private,
                "created_at": r.created_at.isoformat(),
            }
            for r in await self._sinks.all()
        ]

    async def remove_sink(self, sink_id: str, *, actor: str) -> None:
        if not await self._sinks.remove(sink_id, {"sink_id": sink_id, "actor": actor}):
            raise ConfigError(f"no alert sink {sink_id}")

    async def load_sinks(self) -> list[configured.Sink]:
        """Every stored sink, opened; one that no longer passes its checks is skipped and logged."""
        built: list[configured.Sink] = [LogSink(log)]
        for row in await self._sinks.all():
            try:
                config = configured.decode(
                    open_secret(self._ring(), row.sealed_config, alert_sink_context(row.id))
                )
                built.append(
                    configured.build_sink(
                        config,
                        self.policy,
                        allow_private=row.allow_private,
                        clock=self._clock,
                        timeout=self.settings.timeout_seconds,
                    )
                )
            except (ConfigError, AlertError, ValueError) as exc:
                log.error("alert_sink_unusable", sink_id=row.id, error=str(exc)[:200])
        return built

    async def reload_sinks(self) -> int:
        sinks = await self.load_sinks()
        self.dispatcher.set_sinks(sinks)
        return len(sinks)

    async def test_sinks(self, *, actor: str) -> list[dict[str, Any]]:
        """Send a test alert through every sink now; what each answered."""
        self.dispatcher.set_sinks(await self.load_sinks())
        alert = Alert(
            rule="alerts.test",
            severity=Severity.INFO,
            key_id=None,
            account=None,
            action="test",
            reason=f"test alert sent by {actor}",
            time=self._clock.now(),
            ledger_index=None,
        )
        results = await self.dispatcher.send_now(alert)
        return [{"sink": name, "ok": error is None, "error": error} for name, error in results]

    # -- holds ----------------------------------------------------------------------------
    async def holds(self, status: HoldStatus | None) -> list[HoldRecord]:
        return await self._fraud.holds(status=status)

    async def decide_hold(self, hold_id: str, status: HoldStatus, *, actor: str) -> HoldRecord:
        hold = await self._fraud.hold(hold_id)
        if hold is None:
            raise ConfigError(f"no hold {hold_id}")
        entry = {
            "hold_id": hold.id,
            "account": hold.account,
            "key_id": hold.key_id,
            "client_order_id": hold.client_order_id,
            "actor": actor,
        }
        try:
            await self._fraud.decide(hold_id, status, actor=actor, now=self._clock.now(), entry=entry)
        except RowConflict:
            raise ConfigError(f"hold {hold_id} was already {hold.status.value}") from None
        found = await self._fraud.hold(hold_id)
        if found is None:
            raise StoreError(f"hold {hold_id} vanished as it was decided")
        return found

    async def trust(self, key_id: str, account: str, address: str, *, actor: str) -> str:
        """Vouch for an address a key uses (it is no longer a new network for it)."""
        network = network_of(address, *self._prefixes)
        if not network:
            raise ConfigError(f"{address[:64]!r} is not an IP address")
        await self._fraud.add_sightings([(key_id, account, address, network, self._clock.now())])
        self._memory.forget_account(account)
        # the network itself is personal data: the entry carries its digest, not the address
        digest = hashlib.sha256(network.encode()).hexdigest()
        await self._ledger.append(
            "fraud.trusted", {"key_id": key_id, "account": account, "network_sha256": digest, "actor": actor}
        )
        return network
