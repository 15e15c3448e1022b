"""Acceptance: HTTPS only, Mozilla intermediate: old protocols, weak ciphers and other groups refused.

The probes use `openssl s_client`.  The certificate is ECDSA, so RSA key-exchange suites
cannot be negotiated at all; the CBC and SHA-1 suites below are the weak ones it could offer.
Each refusal is paired with a control: the same client against a deliberately permissive
local server succeeds, so a refusal is the gateway's doing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import ShieldSettings
from bastion.errors import ConfigError
from bastion.server import run
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e
OPENSSL = shutil.which("openssl")
requires_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="openssl CLI missing (scripts/system-deps.sh installs it)"
)


def handshake(port: int, *args: str) -> bool:
    assert OPENSSL is not None
    result = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    out = result.stdout.decode(errors="replace")
    return result.returncode == 0 and "Cipher is (NONE)" not in out and "New, " in out


@pytest.fixture(scope="module")
def permissive_port(gateway: Gateway) -> Iterator[int]:
    """A local TLS server that accepts anything, to prove the weak clients below can connect."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(gateway.cert, gateway.home / "tls" / "key.pem")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


WEAK = [
    pytest.param(("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"), id="tls1.1"),
    pytest.param(("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"), id="tls1.0"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"), id="ecdhe-cbc-sha256"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"), id="ecdhe-cbc-sha1"),
    pytest.param(("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"), id="ecdhe-cbc-sha384"),
    pytest.param(("-tls1_3", "-groups", "secp521r1"), id="group-p521"),
    pytest.param(("-tls1_3", "-groups", "ffdhe2048"), id="group-ffdhe"),
]


@requires_openssl
@pytest.mark.parametrize("args", WEAK)
def test_weak_clients_are_refused(gateway: Gateway, permissive_port: int, args: tuple[str, ...]) -> None:
    assert handshake(permissive_port, *args), "control: this client must work against a permissive server"
    assert not handshake(gateway.port, *args)


@requires_openssl
@pytest.mark.parametrize(
    "args",
    [
        ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"),
        ("-tls1_3", "-groups", "X25519"),
        ("-tls1_3", "-groups", "P-256"),
        ("-tls1_3", "-groups", "P-384"),
    ],
)
def test_intermediate_clients_connect(gateway: Gateway, args: tuple[str, ...]) -> None:
    assert handshake(gateway.port, *args)


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        run(
            lambda *_: None,
            host="0.0.0.0",
            port=1,
            cert=None,
            key=None,
            shield=ShieldSettings(),
            insecure_http=True,
        )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="certificate"):
        run(lambda *_: None, host="127.0.0.1", port=1, cert=None, key=None, shield=ShieldSettings())  # type: ignore[arg-type]


def test_plain_http_to_the_tls_port_gets_no_service(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)
    assert b'"status"' not in data
