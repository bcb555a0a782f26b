"""Plumbing for test servers on loopback: a keep-alive ThreadingHTTPServer that can be stopped
for real (open connections dropped) and stays quiet. What to answer is the dispatcher's job.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Dispatch = Callable[["RequestHandler", str], None]
"""Called on a server thread with the handler and the method ("GET"/"POST") of each request."""


class LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``close_connections`` can drop them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall for
        # seconds on machines without a resolver; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down open keep-alive connections: a stopped server must look stopped to clients
        with pooled connections, not keep answering on threads that outlived it."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or go away mid-answer are part of the script, not failures.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class RequestHandler(BaseHTTPRequestHandler):
    """Hands every request to the server's dispatcher; ``reply`` writes a JSON answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real engine
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    server: LoopbackHTTPServer

    def do_GET(self) -> None:
        self.server.dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.dispatch(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def reply(self, status: int, payload: Any) -> None:
        """Send ``payload`` (bytes as-is, None as an empty body, else as JSON)."""
        if isinstance(payload, bytes):
            body = payload
        else:
            body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
