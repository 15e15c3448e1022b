"""A signing proxy for tools that cannot sign (sqlmap, schemathesis' CLI): it takes plain HTTP on
127.0.0.1, signs each request with a Bastion key exactly as a bot would (RFC 9421, fresh nonce),
and forwards it to Bastion over TLS.  Test-only: it holds a private key in memory."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bastion.crypto.httpsig import sign_request
from bastion.crypto.keys import load_ed25519_private


@contextmanager
def signing_proxy(target_port: int, key_id: str, private_key: Path, ca_cert: Path) -> Iterator[int]:
    private = load_ed25519_private(private_key.read_bytes())
    authority = f"127.0.0.1:{target_port}"
    context = ssl.create_default_context(cafile=str(ca_cert))
    counts = {"forwarded": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            headers = sign_request(
                private_key=private,
                hmac_secret=None,
                key_id=key_id,
                method=self.command,
                url_scheme="https",
                authority=authority,
                path=path,
                query=query,
                body=body,
                created=int(time.time()),
            )
            if body:
                headers["content-type"] = self.headers.get("content-type") or "application/json"
            upstream = http.client.HTTPSConnection("127.0.0.1", target_port, context=context, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            counts["forwarded"] += 1
            self.send_response(response.status)
            self.send_header("content-type", response.getheader("content-type") or "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
