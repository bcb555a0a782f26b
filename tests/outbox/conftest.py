"""Real receivers for side effects, on loopback: an SMTP server (aiosmtpd) and an HTTP server.

Both record what they received and can be scripted to refuse or stall, so tests count
deliveries where they land instead of trusting the dispatcher's own bookkeeping. `settings`
is the shared fixture's, with an outbox pointed at these two sinks and short timings.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from agent.outbox.settings import OutboxSettings
from agent.runtime import Services, Settings
from serving.testing.loopback import LoopbackHTTPServer, RequestHandler

SENDER = "agent@garrison.test"
OUTBOX_TIMINGS: dict[str, Any] = {
    "outbox_backoff_base_s": 0.05,
    "outbox_backoff_cap_s": 0.2,
    "outbox_delivery_timeout_s": 1.0,
    "outbox_lease_seconds": 2.0,
    "outbox_poll_interval_s": 0.02,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- SMTP --------------------------------------------------------------------------------------


class SmtpSink:
    """An aiosmtpd server on its own thread; `refuse` queues answers to the next DATAs."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._refusals: deque[str] = deque()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def refuse(self, *answers: str) -> None:
        self._refusals.extend(answers)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._refusals:
            return self._refusals.popleft()
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos]))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


# -- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    """Names lowercased."""
    body: Any


class _AnyMethod(RequestHandler):
    def do_PUT(self) -> None:
        self.server.dispatch(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.dispatch(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.dispatch(self, "DELETE")


class HttpSink:
    """Answers 200 unless scripted: `answer(503, 503)` makes the next two requests fail."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[tuple[int, float]] = deque()
        self._lock = threading.Lock()
        self._server = LoopbackHTTPServer(("127.0.0.1", 0), self._dispatch)
        self._server.RequestHandlerClass = _AnyMethod
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}{path}"

    def answer(self, *statuses: int, delay_s: float = 0.0) -> None:
        with self._lock:
            self._script.extend((s, delay_s) for s in statuses)

    def keys(self) -> Counter[str]:
        """How many requests arrived per Idempotency-Key."""
        with self._lock:
            return Counter(r.headers.get("idempotency-key", "") for r in self.received)

    def _dispatch(self, handler: RequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.received.append(
                Received(
                    method=method,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
            )
            status, delay = self._script.popleft() if self._script else (200, 0.0)
        if delay:
            time.sleep(delay)
        handler.reply(status, {"status": status})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    sink.start()
    yield sink
    sink.stop()


# -- settings and agents -----------------------------------------------------------------------


def outbox_settings(smtp: SmtpSink | None, http: HttpSink | None, **extra: Any) -> OutboxSettings:
    values: dict[str, Any] = {**OUTBOX_TIMINGS, **extra}
    if smtp is not None:
        values.update(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_from=SENDER)
    if http is not None:
        values.update(http_allow_hosts=[http.host])
    return OutboxSettings(**values)


@pytest.fixture
def settings(settings: Settings, smtp_sink: SmtpSink, http_sink: HttpSink) -> Settings:
    return settings.model_copy(update={"outbox": outbox_settings(smtp_sink, http_sink)})


EFFECT_TOOLS = ["send_email", "http_request", "finish"]


async def put_effect_agent(services: Services, tenant: str, name: str = "notifier") -> None:
    """An agent allowed the side-effecting tools (the default agent is not)."""
    await services.tenancy.put_agent(
        tenant,
        name,
        instructions="Notify people and systems when asked.",
        tools=EFFECT_TOOLS,
        retrieval_k=0,
        actor="test",
    )


def send_email(to: list[str], subject: str, body: str) -> dict[str, object]:
    return {"tool": "send_email", "arguments": {"to": to, "subject": subject, "body": body}}


def http_request(method: str, url: str, **arguments: object) -> dict[str, object]:
    return {"tool": "http_request", "arguments": {"method": method, "url": url, **arguments}}


def finish(answer: str = "done") -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": answer}}
