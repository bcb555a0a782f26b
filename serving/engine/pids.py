"""What the operating system says about an engine's processes: is the server alive (and still
the same process, not a reused pid), and which of its helpers outlived it.

Linux first (/proc), with a plain signal check where /proc is missing. Knows nothing about
pid files or deployments; `serving.engine.process` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

# Popen objects of the engines this process started, kept so that they are reaped (a killed
# child stays a zombie that `kill(pid, 0)` still finds) and never garbage-collected while alive.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

VLLM_TITLE = "VLLM::"
"""vLLM retitles its engine core and workers (`VLLM::EngineCore`, `VLLM::Worker`)."""


def track(child: subprocess.Popen[bytes]) -> None:
    _CHILDREN[child.pid] = child


def alive(pid: int, start_ticks: int | None) -> bool:
    """True while `pid` runs and, when `start_ticks` is known, is the process started then."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours, whatever the pid file says
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the signal check above is all we have
    if stat[0] == "Z":
        return False  # exited, not yet reaped by its parent
    return start_ticks is None or int(stat[19]) == start_ticks


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat is not None and len(stat) > 19 else None


def remains(group: int, python: str) -> list[int]:
    """Live processes of process group `group` that run `python` or carry vLLM's titles.

    When the server process dies hard (SIGKILL, OOM), vLLM's engine core and workers do not
    notice: they stay, holding gigabytes, until someone kills them. Matching the command line as
    well as the group keeps us from signalling a stranger that reused the group id.
    """
    found = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _proc_stat(pid)
            if stat is None or stat[0] == "Z" or int(stat[2]) != group:
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            except OSError:
                continue
            if argv0 == python or argv0.startswith(VLLM_TITLE):
                found.append(pid)
    return sorted(found)


def signal_group(group: int, sig: signal.Signals) -> None:
    """Signal a whole group: the server (its leader, by start_new_session) and its children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def signal_each(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    for pid in list(_CHILDREN):
        alive(pid, None)  # reaps what just exited


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces and parentheses.
    return text.rsplit(")", 1)[-1].split()
