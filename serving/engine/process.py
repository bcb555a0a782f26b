"""One engine server as an operating-system process: start it detached, find it again from its
pid file, tell whether it still runs, stop it, read its log.

Files per deployment, in `<data_dir>/engines/`: `<name>.json` (pid, port, command) and
`<name>.log` (the server's stdout and stderr, appended across restarts). The server runs in its
own session, so it outlives the `garrison` command that started it and so that stopping signals
its whole process group (vLLM runs its engine core in a child process).

What the OS says about pids is `serving.engine.pids`; waiting for readiness is
`serving.engine.health`; restarting is `serving.engine.supervisor`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from serving.engine import pids
from serving.engine.command import LOOPBACK
from serving.engine.errors import EngineStartFailed

State = Literal["running", "stopped", "dead", "external"]
"""`external`: a deployment someone else runs; it has no process here."""


@dataclass(frozen=True, slots=True)
class EngineRecord:
    """What `<name>.json` holds about a started engine."""

    name: str
    pid: int
    port: int
    command: list[str]
    log: str
    started_at: str
    start_ticks: int | None = None
    """The process's start time from /proc (clock ticks since boot): a pid reused by another
    program after a crash has a different one. Command lines cannot tell, vLLM retitles."""


@dataclass(frozen=True, slots=True)
class EngineStatus:
    name: str
    state: State
    detail: str
    record: EngineRecord | None


class EngineFiles:
    """Where one deployment's pid file and log live."""

    def __init__(self, engines_dir: Path, name: str) -> None:
        self.name = name
        self.pid_file = engines_dir / f"{name}.json"
        self.log = engines_dir / f"{name}.log"

    def read(self) -> EngineRecord | None:
        try:
            return EngineRecord(**json.loads(self.pid_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, record: EngineRecord) -> None:
        # Written to a temporary name and renamed: a reader never sees half a file.
        partial = self.pid_file.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
        partial.replace(self.pid_file)

    def forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)


def start(
    files: EngineFiles, argv: Sequence[str], env: Mapping[str, str], *, port: int
) -> EngineRecord:
    """Start the server detached; EngineStartFailed if it cannot even be launched."""
    if not port_free(port):
        raise EngineStartFailed(
            f"port {port} for {files.name} is already in use on {LOOPBACK}; stop what holds it "
            "or give the deployment another placement.port"
        )
    files.log.parent.mkdir(parents=True, exist_ok=True)
    with files.log.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== garrison: starting {files.name} at {stamp}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(  # noqa: S603 - argv comes from the registry, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=files.log.parent,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineStartFailed(f"could not start {files.name}: {exc}") from exc
    pids.track(child)
    record = EngineRecord(
        name=files.name,
        pid=child.pid,
        port=port,
        command=list(argv),
        log=str(files.log),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        start_ticks=pids.start_ticks(child.pid),
    )
    files.write(record)
    return record


def status(files: EngineFiles) -> EngineStatus:
    record = files.read()
    if record is None:
        return EngineStatus(files.name, "stopped", "not started", None)
    if alive(record):
        return EngineStatus(files.name, "running", f"pid {record.pid}", record)
    return EngineStatus(
        files.name, "dead", f"pid {record.pid} is gone (stale pid file; see the log)", record
    )


def alive(record: EngineRecord) -> bool:
    """True while the recorded server process runs (and is still that server, not a reused pid)."""
    return pids.alive(record.pid, record.start_ticks)


def stop(files: EngineFiles, *, grace_s: float) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after `grace_s`, including the
    helpers a crashed server left behind; True if the server itself was running."""
    record = files.read()
    if record is None:
        return False
    python = record.command[0]
    was_running = alive(record)
    if was_running:
        pids.signal_group(record.pid, signal.SIGTERM)
    else:
        pids.signal_each(pids.remains(record.pid, python), signal.SIGTERM)
    _wait_gone(record, grace_s)
    leftovers = pids.remains(record.pid, python)
    if alive(record):
        leftovers.append(record.pid)
    if leftovers:
        pids.signal_each(leftovers, signal.SIGKILL)
        _wait_gone(record, 5.0)
    files.forget()
    return was_running


def _wait_gone(record: EngineRecord, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(record) and not pids.remains(record.pid, record.command[0]):
            return
        time.sleep(0.2)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will (uvicorn sets it): connections of an engine that just died linger
        # in TIME_WAIT on the port, which only a listener holds against a new server.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log, reading only its end (logs grow for weeks)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max(lines, 1) * 400))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []
