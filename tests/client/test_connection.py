"""The SDK's transport failures: an answer cut short by a server that stops mid-answer is a
``BastionConnectionError`` (an ``OSError``), never an ``http.client`` exception leaking out."""

from __future__ import annotations

import socket
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.client import BastionClient, BastionConnectionError
from bastion.crypto.keys import generate_ed25519

KEY_ID = "bst_" + "a" * 30


class Cutting:
    """A plain-HTTP server on 127.0.0.1 that reads a request, then answers with ``answer``
    and closes, whatever it promised."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_ed25519()


@pytest.mark.parametrize(
    "answer",
    [
        # the head promises 785 bytes, none come: what a SIGKILL mid-answer looks like
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 785\r\n\r\n",
        b'HTTP/1.1 201 Created\r\ncontent-length: 100\r\n\r\n{"id": "ord_',
        b"HTTP/1.1 2",  # a status line cut off
        b"SMTP ready\r\n\r\n",  # not HTTP at all
        b"",  # closed without a word, on the retry too
    ],
)
def test_an_answer_cut_short_is_a_connection_error(answer: bytes, key: Ed25519PrivateKey) -> None:
    server = Cutting(answer)
    try:
        client = BastionClient(f"http://127.0.0.1:{server.port}", KEY_ID, key, timeout=5)
        with pytest.raises(BastionConnectionError) as caught:
            client.place_order("c-1", "GOOG", "buy", "market", "1")
        assert isinstance(caught.value, OSError)
        assert "retry with the same client_order_id" in str(caught.value)
    finally:
        server.close()
