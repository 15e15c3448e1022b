"""``bastion alerts ...`` and ``bastion fraud ...``: alert sinks, held orders, trusted addresses."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion import cli
from bastion.alerts.configured import SinkConfig
from bastion.errors import BastionError, ConfigError
from bastion.ports import HoldRecord, HoldStatus
from bastion.services import Services

alerts_app = typer.Typer(help="Where alerts go: webhooks, e-mail, chat.", no_args_is_help=True)
fraud_app = typer.Typer(help="The fraud stage: held orders and trusted addresses.", no_args_is_help=True)

AllowPrivate = Annotated[
    bool,
    typer.Option(
        "--allow-private-network",
        help="Allow a loopback, private or link-local target (also needs alerts.allowed_private_networks)",
    ),
]


def _tell(home: Any, request: dict[str, Any]) -> bool:
    try:
        return cli._tell_server(home, request)
    except BastionError:
        return False


@alerts_app.command("add")
def alerts_add(
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST signed JSON to this URL")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Send e-mail to this address")] = None,
    smtp: Annotated[
        str | None, typer.Option("--smtp", help="With --email: the SMTP server, HOST:PORT")
    ] = None,
    sender: Annotated[
        str, typer.Option("--from", help="With --email: the sender")
    ] = "bastion@localhost.localdomain",
    slack: Annotated[
        str | None, typer.Option("--slack", help="A Slack-compatible incoming webhook URL")
    ] = None,
    allow_private: AllowPrivate = False,
    home: cli.Home = None,
    as_json: cli.Json = False,
) -> None:
    """Add an alert sink.  Its target is checked against SSRF now and at every connection; a
    webhook's signing secret is printed once."""
    chosen = [x for x in (webhook, email, slack) if x is not None]
    if len(chosen) != 1:
        cli._fail("give exactly one of --webhook, --email or --slack", as_json)
    if email is not None:
        if smtp is None:
            cli._fail("--email needs --smtp HOST:PORT", as_json)
        host, _, port_text = smtp.rpartition(":")
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses
        if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            cli._fail("--smtp takes HOST:PORT (a port 1-65535)", as_json)
        config = SinkConfig(kind="email", host=host.strip("[]"), port=int(port_text), to=email, sender=sender)
    elif webhook is not None:
        config = SinkConfig(kind="webhook", url=webhook)
    else:
        config = SinkConfig(kind="slack", url=str(slack))
    path = cli._home(home)
    try:
        shown = cli._with_services(
            path, lambda s: s.oversight.add_sink(config, allow_private=allow_private, actor=cli._actor())
        )
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    _tell(path, {"op": "reload_alerts"})
    text = f"alert sink {shown['id']} added: {shown['target']}"
    if "secret" in shown:
        text += f"\nwebhook signing secret (shown once): {shown['secret']}"
        text += "\nreceivers check the Bastion-Alert-Signature header with it (docs/alerts.md)"
    cli._emit(as_json, shown, text)


@alerts_app.command("list")
def alerts_list(home: cli.Home = None, as_json: cli.Json = False) -> None:
    """Every alert sink (targets shown without paths or tokens)."""
    try:
        sinks = cli._with_services(cli._home(home), lambda s: s.oversight.list_sinks())
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    text = (
        "\n".join(f"{x['id']}  {x['kind']:8} {x['target']}" for x in sinks)
        or "no alert sinks (alerts go to the log)"
    )
    cli._emit(as_json, {"sinks": sinks}, text)


@alerts_app.command("remove")
def alerts_remove(sink_id: str, home: cli.Home = None, as_json: cli.Json = False) -> None:
    """Remove an alert sink."""
    path = cli._home(home)
    try:
        cli._with_services(path, lambda s: s.oversight.remove_sink(sink_id, actor=cli._actor()))
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    _tell(path, {"op": "reload_alerts"})
    cli._emit(as_json, {"removed": sink_id}, f"alert sink {sink_id} removed")


@alerts_app.command("test")
def alerts_test(home: cli.Home = None, as_json: cli.Json = False) -> None:
    """Send a test alert through every sink now; exit 1 if any failed."""

    async def run(s: Services) -> list[dict[str, Any]]:
        await s.alerts.start()
        return await s.oversight.test_sinks(actor=cli._actor())

    try:
        results = cli._with_services(cli._home(home), run)
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    text = "\n".join(
        f"{'ok    ' if r['ok'] else 'FAILED'} {r['sink']}" + (f": {r['error']}" if r["error"] else "")
        for r in results
    )
    cli._emit(as_json, {"results": results}, text)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


def _hold_view(hold: HoldRecord) -> dict[str, Any]:
    return {
        "id": hold.id,
        "status": hold.status.value,
        "account": hold.account,
        "key_id": hold.key_id,
        "client_order_id": hold.client_order_id,
        "score": hold.score,
        "rules": list(hold.rules),
        "reason": hold.reason,
        "created_at": hold.created_at.isoformat(),
        "decided_at": hold.decided_at.isoformat() if hold.decided_at else None,
        "decided_by": hold.decided_by,
    }


@fraud_app.command("holds")
def fraud_holds(
    everything: Annotated[bool, typer.Option("--all", help="Decided holds too")] = False,
    home: cli.Home = None,
    as_json: cli.Json = False,
) -> None:
    """Orders the fraud stage held (pending unless --all)."""
    status = None if everything else HoldStatus.PENDING
    try:
        holds = cli._with_services(cli._home(home), lambda s: s.oversight.holds(status))
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    views = [_hold_view(h) for h in holds]
    text = "\n".join(
        f"{v['id']}  {v['status']:9} {v['account']} {v['client_order_id']} "
        f"score {v['score']}: {v['reason'][:120]}"
        for v in views
    )
    cli._emit(as_json, {"holds": views}, text or "no holds")


def _decide(hold_id: str, status: HoldStatus, home: cli.Home, as_json: bool) -> None:
    try:
        hold = cli._with_services(
            cli._home(home), lambda s: s.oversight.decide_hold(hold_id, status, actor=cli._actor())
        )
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    after = (
        "the bot's retry with the same client_order_id now goes through"
        if status is HoldStatus.CONFIRMED
        else "it stays refused"
    )
    cli._emit(as_json, _hold_view(hold), f"hold {hold_id} {status.value}: {after}")


@fraud_app.command("confirm")
def fraud_confirm(hold_id: str, home: cli.Home = None, as_json: cli.Json = False) -> None:
    """Confirm a held order (the operator vouches for it)."""
    _decide(hold_id, HoldStatus.CONFIRMED, home, as_json)


@fraud_app.command("reject")
def fraud_reject(hold_id: str, home: cli.Home = None, as_json: cli.Json = False) -> None:
    """Reject a held order for good."""
    _decide(hold_id, HoldStatus.REJECTED, home, as_json)


@fraud_app.command("trust")
def fraud_trust(
    key_id: str,
    address: Annotated[str, typer.Option("--address", help="The address the key now uses")],
    home: cli.Home = None,
    as_json: cli.Json = False,
) -> None:
    """Vouch for a new address of a key (a bot that moved hosts): its network is known from now on."""

    async def run(s: Services) -> str:
        key = await s.keys.get_key(key_id)
        if key is None:
            raise ConfigError(f"no key {key_id}")
        return await s.oversight.trust(key_id, key.account, address, actor=cli._actor())

    path = cli._home(home)
    try:
        network = cli._with_services(path, run)
    except BastionError as exc:
        cli._fail(str(exc), as_json)
    cli._emit(
        as_json, {"key_id": key_id, "network": network}, f"{network} is now a known network of {key_id}"
    )
