"""Alert sinks as the operator configures them (``bastion alerts add``), stored sealed.

A sink's configuration is sealed by the vault as a whole: a webhook URL may carry a token
(a Slack webhook's path *is* one) and a webhook's signing secret must never be stored plain.
Only a display form that hides paths and queries is kept in clear.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from bastion.alerts.sinks import LogSink, SlackSink, SmtpSink, WebhookSink
from bastion.alerts.ssrf import TargetPolicy
from bastion.ports import Clock

Kind = Literal["webhook", "email", "slack"]


class SinkConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: Kind
    url: str = ""
    secret: str = ""  # webhook only: the HMAC-SHA256 key (these characters, as the receiver has them)
    host: str = ""  # e-mail only
    port: int = 25
    to: str = ""
    sender: str = "bastion@localhost.localdomain"
    starttls: Literal["auto", "never", "require"] = "auto"


Sink = WebhookSink | SlackSink | SmtpSink | LogSink


def build_sink(
    config: SinkConfig, policy: TargetPolicy, *, allow_private: bool, clock: Clock, timeout: float
) -> Sink:
    """The sink for a configuration; raises ConfigError or TargetRefused for a bad one."""
    if config.kind == "webhook":
        return WebhookSink(
            config.url,
            config.secret.encode(),
            policy,
            allow_private=allow_private,
            timeout=timeout,
            clock=clock,
        )
    if config.kind == "slack":
        return SlackSink(config.url, policy, allow_private=allow_private, timeout=timeout, clock=clock)
    return SmtpSink(
        config.host,
        config.port,
        config.to,
        config.sender,
        policy,
        allow_private=allow_private,
        timeout=timeout,
        starttls=config.starttls,
    )


def encode(config: SinkConfig) -> bytes:
    return msgspec.json.encode(config)


def decode(raw: bytes) -> SinkConfig:
    return msgspec.json.decode(raw, type=SinkConfig)
