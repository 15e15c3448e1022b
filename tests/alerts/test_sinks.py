"""Alert sinks against real local servers: an aiohttp webhook receiver and an aiosmtpd SMTP
server, both on 127.0.0.1 at random ports.  Signatures, bodies, redirects, retries, SSRF
refusals at connect time, STARTTLS and header injection."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.alerts import (
    SIGNATURE_HEADER,
    Alert,
    AlertDispatcher,
    LogSink,
    Severity,
    SlackSink,
    SmtpSink,
    TargetPolicy,
    WebhookSink,
    sign_webhook,
    verify_webhook_signature,
)
from bastion.clock import FakeClock
from bastion.errors import AlertError, ConfigError, TargetRefused

SECRET = b"webhook-test-secret"
LOCAL = TargetPolicy(["127.0.0.1/32"])
LOCALHOST = TargetPolicy(["127.0.0.0/8", "::1/128"])


def make_alert(clock: FakeClock, *, reason: str = "new source network", **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "rule": "fraud.new_network",
        "severity": Severity.CRITICAL,
        "key_id": "bst_k1",
        "account": "demo",
        "action": "hold",
        "reason": reason,
        "time": clock.now(),
        "ledger_index": 42,
        "details": {"score": 0.93, "rules": ["new_network"]},
    }
    fields.update(kw)
    return Alert(**fields)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers for /hook, in order; then 200
    delay: float = 0.0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(Hit(request.path, dict(request.headers), await request.read()))
        if request.path == "/redirect":
            raise web.HTTPFound(location=self.url("/target"))
        if request.path == "/big":
            return web.Response(body=b"x" * (1024 * 1024))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# --- webhook --------------------------------------------------------------------------------


async def test_webhook_posts_signed_compact_json(receiver: Receiver, clock: FakeClock) -> None:
    sink = WebhookSink(receiver.url("/hook?x=1"), SECRET, LOCAL, allow_private=True, clock=clock)
    alert = make_alert(clock)
    try:
        await sink.send(alert)
    finally:
        await sink.close()
    (hit,) = receiver.hits
    assert hit.path == "/hook"
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"] == "bastion-alerts"
    header = hit.headers[SIGNATURE_HEADER]
    assert header.startswith(f"t={int(clock.now().timestamp())},v1=")
    assert verify_webhook_signature(SECRET, header, hit.body, now=clock.now().timestamp())
    assert not verify_webhook_signature(b"another secret", header, hit.body, now=clock.now().timestamp())
    sent = json.loads(hit.body)
    assert sent == alert.to_json()
    assert list(sent) == sorted(sent) and b" " not in hit.body.replace(b"new source network", b"")
    assert sent["time"].endswith(("Z", "+00:00")) and sent["ledger_index"] == 42


async def test_webhook_does_not_follow_redirects(receiver: Receiver, clock: FakeClock) -> None:
    sink = WebhookSink(receiver.url("/redirect"), SECRET, LOCAL, allow_private=True, clock=clock)
    try:
        with pytest.raises(AlertError, match="redirects are not followed") as caught:
            await sink.send(make_alert(clock))
    finally:
        await sink.close()
    assert caught.value.retryable is False
    assert receiver.paths() == ["/redirect"]  # /target was never asked for


async def test_a_500_then_200_is_retried_by_the_dispatcher(receiver: Receiver, clock: FakeClock) -> None:
    receiver.statuses = [500, 503, 200]
    sink = WebhookSink(receiver.url("/hook"), SECRET, LOCAL, allow_private=True, clock=clock)
    sleep = RecordingSleep()
    delivered: list[str] = []
    dispatcher = AlertDispatcher(clock, sleep=sleep, on_delivered=lambda a, name, s: delivered.append(name))
    dispatcher.set_sinks([sink])
    await dispatcher.start()
    assert dispatcher.submit(make_alert(clock))
    await dispatcher.close()
    assert receiver.paths() == ["/hook", "/hook", "/hook"]
    assert sleep.calls == [0.2, 0.4]
    assert delivered == [sink.name]
    assert dispatcher.stats()["delivered"] == 1 and dispatcher.stats()["failed"] == 0


async def test_a_404_is_not_retried(receiver: Receiver, clock: FakeClock) -> None:
    receiver.statuses = [404, 200]
    sink = WebhookSink(receiver.url("/hook"), SECRET, LOCAL, allow_private=True, clock=clock)
    sleep = RecordingSleep()
    failures: list[str] = []
    dispatcher = AlertDispatcher(clock, sleep=sleep, on_failed=lambda a, name, why: failures.append(why))
    dispatcher.set_sinks([sink])
    ((name, error),) = await dispatcher.send_now(make_alert(clock, action="test"))
    await dispatcher.close()
    assert name == sink.name and error is not None and "404" in error
    assert failures == [error]
    assert receiver.paths() == ["/hook"] and sleep.calls == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(408, True), (429, True), (502, True), (400, False), (410, False)]
)
async def test_status_codes_say_whether_to_retry(
    receiver: Receiver, clock: FakeClock, status: int, retryable: bool
) -> None:
    receiver.statuses = [status]
    sink = WebhookSink(receiver.url("/hook"), SECRET, LOCAL, allow_private=True, clock=clock)
    try:
        with pytest.raises(AlertError, match=str(status)) as caught:
            await sink.send(make_alert(clock))
    finally:
        await sink.close()
    assert caught.value.retryable is retryable


async def test_a_slow_receiver_is_a_retryable_timeout(receiver: Receiver, clock: FakeClock) -> None:
    receiver.delay = 2.0
    sink = WebhookSink(receiver.url("/hook"), SECRET, LOCAL, allow_private=True, timeout=0.2, clock=clock)
    try:
        with pytest.raises(AlertError, match="no answer") as caught:
            await sink.send(make_alert(clock))
    finally:
        await sink.close()
    assert caught.value.retryable


async def test_a_closed_port_is_a_retryable_connection_error(clock: FakeClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", SECRET, LOCAL, allow_private=True, clock=clock)
    try:
        with pytest.raises(AlertError, match="cannot connect") as caught:
            await sink.send(make_alert(clock))
    finally:
        await sink.close()
    assert caught.value.retryable


async def test_a_large_answer_is_not_read_whole(receiver: Receiver, clock: FakeClock) -> None:
    sink = WebhookSink(receiver.url("/big"), SECRET, LOCAL, allow_private=True, clock=clock)
    try:
        await sink.send(make_alert(clock))  # succeeds; at most 64 KiB were read
        await sink.send(make_alert(clock))  # and the dropped connection does not break the next
    finally:
        await sink.close()
    assert receiver.paths() == ["/big", "/big"]


async def test_a_webhook_to_loopback_without_allowance_fails_at_construction(
    receiver: Receiver, clock: FakeClock
) -> None:
    with pytest.raises(TargetRefused, match=r"127\.0\.0\.1"):
        WebhookSink(receiver.url("/hook"), SECRET, TargetPolicy(), allow_private=True, clock=clock)
    with pytest.raises(TargetRefused):
        WebhookSink(receiver.url("/hook"), SECRET, LOCAL, allow_private=False, clock=clock)
    assert receiver.hits == []


async def test_a_name_is_checked_when_it_is_connected_to(receiver: Receiver, clock: FakeClock) -> None:
    url = receiver.url("/hook", host="localhost")
    refused = WebhookSink(url, SECRET, TargetPolicy(["10.0.0.0/8"]), allow_private=True, clock=clock)
    try:
        with pytest.raises(TargetRefused, match="localhost"):
            await refused.send(make_alert(clock))
    finally:
        await refused.close()
    assert receiver.hits == []
    allowed = WebhookSink(url, SECRET, LOCALHOST, allow_private=True, clock=clock)
    try:
        await allowed.send(make_alert(clock))
    finally:
        await allowed.close()
    assert receiver.paths() == ["/hook"]


def test_webhook_names_hide_the_path_and_query(clock: FakeClock) -> None:
    policy = TargetPolicy()
    sink = WebhookSink(
        "https://hooks.example.com/t/SECRETPATH?token=abc", SECRET, policy, allow_private=False, clock=clock
    )
    assert sink.name == "webhook https://hooks.example.com/…"
    assert "SECRETPATH" not in repr(sink) and "abc" not in repr(sink)
    port = WebhookSink("https://[2606:4700::1]:8443/", SECRET, policy, allow_private=False, clock=clock)
    assert port.name == "webhook https://[2606:4700::1]:8443"


def test_a_webhook_needs_a_secret(clock: FakeClock) -> None:
    with pytest.raises(ConfigError):
        WebhookSink("https://hooks.example.com/x", b"", TargetPolicy(), allow_private=False, clock=clock)
    with pytest.raises(ConfigError):
        WebhookSink(
            "https://hooks.example.com/x", SECRET, TargetPolicy(), allow_private=False, timeout=0, clock=clock
        )


# --- signatures -----------------------------------------------------------------------------


def test_signatures_reject_tampering_staleness_and_garbage() -> None:
    body = b'{"rule":"x"}'
    header = sign_webhook(SECRET, body, 1_700_000_000)
    assert verify_webhook_signature(SECRET, header, body, now=1_700_000_000)
    assert verify_webhook_signature(SECRET, header, body, now=1_700_000_299)
    assert not verify_webhook_signature(SECRET, header, b'{"rule":"y"}', now=1_700_000_000)
    assert not verify_webhook_signature(SECRET, header, body, now=1_700_000_301)  # stale
    assert not verify_webhook_signature(SECRET, header, body, now=1_699_999_000)  # from the future
    assert not verify_webhook_signature(SECRET, header, body, now=1_700_000_400, tolerance=60)
    assert not verify_webhook_signature(b"", header, body, now=1_700_000_000)
    moved = header.replace("t=1700000000", "t=1700000100")  # a fresh time on an old signature
    assert not verify_webhook_signature(SECRET, moved, body, now=1_700_000_100)
    for garbage in (
        "",
        "t=1700000000",
        "v1=" + "0" * 64,
        "t=abc,v1=00",
        "t=-5,v1=aa",
        "nonsense",
        "t=1,t=2,v1=a",
    ):
        assert not verify_webhook_signature(SECRET, garbage, body, now=1_700_000_000)
    digest = header.partition("v1=")[2]
    rotated = f"t=1700000000,v1={'0' * 64},v1={digest}"  # old and new secret side by side
    assert verify_webhook_signature(SECRET, rotated, body, now=1_700_000_000)


# --- Slack ----------------------------------------------------------------------------------


async def test_slack_posts_text_and_hides_its_token(receiver: Receiver, clock: FakeClock) -> None:
    url = receiver.url("/services/T000/B000/XXXXSLACKTOKEN")
    sink = SlackSink(url, LOCAL, allow_private=True, clock=clock)
    assert "XXXXSLACKTOKEN" not in sink.name and "services" not in sink.name
    assert sink.name == "slack 127.0.0.1"
    alert = make_alert(clock, reason="ping <!channel> & <https://evil.example|click>")
    try:
        await sink.send(alert)
    finally:
        await sink.close()
    (hit,) = receiver.hits
    sent = json.loads(hit.body)
    assert list(sent) == ["text"]
    assert sent["text"].startswith("[critical] fraud.new_network: key bst_k1 account demo → hold (")
    assert "<!channel>" not in sent["text"] and "&lt;!channel&gt;" in sent["text"]
    assert SIGNATURE_HEADER not in hit.headers


def test_slack_follows_the_same_url_rules(clock: FakeClock) -> None:
    with pytest.raises(TargetRefused, match="plain HTTP"):
        SlackSink("http://hooks.slack.com/services/x", TargetPolicy(), allow_private=False, clock=clock)
    with pytest.raises(TargetRefused, match="metadata"):
        SlackSink(
            "https://169.254.169.254/x", TargetPolicy(["169.254.0.0/16"]), allow_private=True, clock=clock
        )


# --- the log --------------------------------------------------------------------------------


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.records.append((event, kw))


async def test_the_log_sink_logs_the_json_form(clock: FakeClock) -> None:
    logger = RecordingLogger()
    alert = make_alert(clock)
    await LogSink(logger).send(alert)
    assert logger.records == [("alert", alert.to_json())]


# --- SMTP -----------------------------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int


def run_smtp(**kw: Any) -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    try:
        yield SmtpServer(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from run_smtp()


def write_certificate(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate valid for the DNS ``names`` only (no IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alerts test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{names[0]}.crt", directory / f"{names[0]}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def run_smtp_tls(directory: Path, names: list[str]) -> Iterator[tuple[SmtpServer, ssl.SSLContext]]:
    """An SMTP server demanding STARTTLS with a certificate for ``names``, and a client
    context that trusts that certificate."""
    cert, key = write_certificate(directory, names)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    for server in run_smtp(tls_context=server_context, require_starttls=True):
        yield server, client_context


@pytest.fixture
def smtp_localhost_tls(tmp_path: Path) -> Iterator[tuple[SmtpServer, ssl.SSLContext]]:
    yield from run_smtp_tls(tmp_path, ["localhost"])


@pytest.fixture
def smtp_other_name_tls(tmp_path: Path) -> Iterator[tuple[SmtpServer, ssl.SSLContext]]:
    yield from run_smtp_tls(tmp_path, ["mail.example.net"])


async def test_smtp_delivers_json_with_a_one_line_subject(smtp: SmtpServer, clock: FakeClock) -> None:
    sink = SmtpSink(
        "127.0.0.1", smtp.port, "ops@example.com", "bastion@example.com", LOCAL, allow_private=True
    )
    alert = make_alert(clock, reason="odd\r\nBcc: victim@example.net\r\n\r\nforged body " + "x" * 300)
    await sink.send(alert)
    ((mail_from, rcpt_tos, content),) = smtp.mailbox.messages
    assert mail_from == "bastion@example.com" and rcpt_tos == ["ops@example.com"]
    message = email.message_from_bytes(content, policy=email.policy.default)
    subject = str(message["Subject"])
    assert "\r" not in subject and "\n" not in subject and len(subject) <= 200
    assert subject.startswith("[critical] fraud.new_network: key bst_k1 account demo → hold (odd Bcc:")
    assert message["Bcc"] is None and message["To"] == "ops@example.com"
    body = message.get_body()
    assert body is not None
    assert json.loads(body.get_content()) == alert.to_json()


async def test_smtp_require_fails_when_starttls_is_not_offered(smtp: SmtpServer, clock: FakeClock) -> None:
    sink = SmtpSink(
        "127.0.0.1",
        smtp.port,
        "ops@example.com",
        "b@example.com",
        LOCAL,
        allow_private=True,
        starttls="require",
    )
    with pytest.raises(AlertError, match="STARTTLS") as caught:
        await sink.send(make_alert(clock))
    assert caught.value.retryable is False
    assert smtp.mailbox.messages == []


async def test_smtp_starttls_checks_the_name_not_the_address(
    smtp_localhost_tls: tuple[SmtpServer, ssl.SSLContext], clock: FakeClock
) -> None:
    server, trusting = smtp_localhost_tls
    # "localhost" resolves (maybe to ::1 first, which refuses the connection); the checked
    # 127.0.0.1 is connected to, and the certificate, valid for the name "localhost" only,
    # is verified against that name
    sink = SmtpSink(
        "localhost",
        server.port,
        "ops@example.com",
        "b@example.com",
        LOCALHOST,
        allow_private=True,
        starttls="require",
        tls_context=trusting,
    )
    await sink.send(make_alert(clock))
    assert len(server.mailbox.messages) == 1
    # with the system's trust store, the self-signed certificate does not verify
    untrusting = SmtpSink(
        "localhost", server.port, "ops@example.com", "b@example.com", LOCALHOST, allow_private=True
    )
    with pytest.raises(AlertError, match="did not verify") as caught:
        await untrusting.send(make_alert(clock))
    assert caught.value.retryable is False
    assert len(server.mailbox.messages) == 1


async def test_smtp_starttls_refuses_a_certificate_for_another_name(
    smtp_other_name_tls: tuple[SmtpServer, ssl.SSLContext], clock: FakeClock
) -> None:
    server, trusting = smtp_other_name_tls
    sink = SmtpSink(
        "localhost",
        server.port,
        "ops@example.com",
        "b@example.com",
        LOCALHOST,
        allow_private=True,
        tls_context=trusting,
    )
    with pytest.raises(AlertError, match="did not verify"):
        await sink.send(make_alert(clock))
    assert server.mailbox.messages == []


async def test_smtp_refuses_unallowed_targets(smtp: SmtpServer, clock: FakeClock) -> None:
    with pytest.raises(TargetRefused, match=r"127\.0\.0\.1"):
        SmtpSink(
            "127.0.0.1", smtp.port, "ops@example.com", "b@example.com", TargetPolicy(), allow_private=True
        )
    sink = SmtpSink(
        "localhost",
        smtp.port,
        "ops@example.com",
        "b@example.com",
        TargetPolicy(["10.0.0.0/8"]),
        allow_private=True,
    )
    with pytest.raises(TargetRefused, match="localhost"):
        await sink.send(make_alert(clock))
    assert smtp.mailbox.messages == []


async def test_smtp_to_a_closed_port_is_retryable(clock: FakeClock) -> None:
    sink = SmtpSink("127.0.0.1", free_port(), "ops@example.com", "b@example.com", LOCAL, allow_private=True)
    with pytest.raises(AlertError, match="cannot connect") as caught:
        await sink.send(make_alert(clock))
    assert caught.value.retryable


@pytest.mark.parametrize(
    "address",
    ["", "ops", "a@b@example.com", "ops@example.com\r\nBcc: x@y.z", "ops @example.com", "<ops@example.com>"],
)
def test_smtp_addresses_are_checked(address: str) -> None:
    with pytest.raises(ConfigError):
        SmtpSink("127.0.0.1", 25, address, "b@example.com", LOCAL, allow_private=True)
    with pytest.raises(ConfigError):
        SmtpSink("127.0.0.1", 25, "ops@example.com", address, LOCAL, allow_private=True)


def test_smtp_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        SmtpSink("127.0.0.1", 0, "ops@example.com", "b@example.com", LOCAL, allow_private=True)
    with pytest.raises(ConfigError):
        SmtpSink(
            "127.0.0.1",
            25,
            "ops@example.com",
            "b@example.com",
            LOCAL,
            allow_private=True,
            starttls="maybe",  # type: ignore[arg-type]
        )
    sink = SmtpSink("127.0.0.1", 2525, "ops@example.com", "b@example.com", LOCAL, allow_private=True)
    assert sink.name == "smtp 127.0.0.1:2525 to ops@example.com"
