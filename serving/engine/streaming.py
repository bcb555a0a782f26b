"""Run a long child process (pip, a model conversion) to the end while telling a person how it
goes: the lines worth reading, and a heartbeat with the elapsed time when it is quiet.

Only the running and summarising belongs here; what a failure means is the caller's to say
(it gets the exit code and the last lines of output).
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str], None]
"""Receives one human-readable line at a time (the CLI prints it; tests collect it)."""

HEARTBEAT_S = 15.0
TAIL_LINES = 30


def quiet(_line: str) -> None:
    """A `Progress` that says nothing."""


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    seconds: float
    tail: tuple[str, ...]
    """The last lines of combined stdout/stderr, for the error message."""


def run_streaming(
    argv: Sequence[str],
    *,
    label: str,
    progress: Progress,
    keep: Callable[[str], str | None] = lambda line: line,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Finished:
    """Run `argv`; pass each line through `keep` (None = not worth showing) to `progress`.

    A reader thread feeds a queue so that a silent child (pip unpacking 3 GB) still gets a
    heartbeat line every HEARTBEAT_S seconds.
    """
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        child = subprocess.Popen(  # noqa: S603 - argv is built by us, never by a shell string
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else dict(os.environ),
            cwd=cwd,
        )
    except OSError as exc:
        return Finished(127, 0.0, (f"could not run {argv[0]}: {exc}",))
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            lines.put(raw.rstrip())
        lines.put(None)

    threading.Thread(target=pump, name=f"stream-{label}", daemon=True).start()
    last_said = started
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            line = ""
        now = time.perf_counter()
        if line is None:
            break
        if line:
            tail.append(line)
            shown = keep(line)
            if shown:
                progress(f"  {shown}")
                last_said = now
        if now - last_said >= HEARTBEAT_S:
            progress(f"  ... still {label} ({now - started:.0f} s)")
            last_said = now
    returncode = child.wait()
    return Finished(returncode, time.perf_counter() - started, tuple(tail))
