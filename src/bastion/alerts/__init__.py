"""Alerts: tell an operator when a rule fires, without slowing or endangering the gateway.

- :mod:`.alert`: the :class:`Alert` record and its JSON and one-line renderings.
- :mod:`.ssrf`: :class:`TargetPolicy`, which refuses sink targets inside private networks.
- :mod:`.sinks`: log, signed webhook, Slack and SMTP sinks.
- :mod:`.dispatch`: :class:`AlertDispatcher`, non-blocking submission with dedupe, rate
  limits and retried background delivery.
"""

from __future__ import annotations

from bastion.alerts.alert import Alert, Severity
from bastion.alerts.dispatch import AlertDispatcher
from bastion.alerts.sinks import (
    SIGNATURE_HEADER,
    LogSink,
    Sink,
    SlackSink,
    SmtpSink,
    WebhookSink,
    sign_webhook,
    verify_webhook_signature,
)
from bastion.alerts.ssrf import METADATA_ADDRESSES, CheckedResolver, TargetPolicy

__all__ = [
    "METADATA_ADDRESSES",
    "SIGNATURE_HEADER",
    "Alert",
    "AlertDispatcher",
    "CheckedResolver",
    "LogSink",
    "Severity",
    "Sink",
    "SlackSink",
    "SmtpSink",
    "TargetPolicy",
    "WebhookSink",
    "sign_webhook",
    "verify_webhook_signature",
]
