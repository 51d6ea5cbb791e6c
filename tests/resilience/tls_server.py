"""A keep-alive HTTPS server on loopback, with a trustme certificate.

Shared by the pooled-transport tests and ``benchmarks/bench_pool.py``.
Paths choose the answer: ``/status/<code>`` answers that code, and
``/ig-error/<code>/<errorCode>`` an IG error body.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY,
    # Nagle and delayed ACKs add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = self.path.strip("/").split("/")
        status, body = 200, {"ok": True}
        if parts[0] == "status" and len(parts) > 1:
            status = int(parts[1])
        if parts[0] == "ig-error" and len(parts) > 2:
            status, body = int(parts[1]), {"errorCode": parts[2]}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class TLSServer:
    url: str
    ca_path: str
    client_context: ssl.SSLContext


@contextmanager
def tls_server(directory: Path) -> Iterator[TLSServer]:
    """Serve HTTPS on 127.0.0.1 until the block ends."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client_context = ssl.create_default_context(cafile=str(ca_path))

    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        yield TLSServer(f"https://127.0.0.1:{port}", str(ca_path), client_context)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
