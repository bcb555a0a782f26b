"""The measurement harness every framework runner shares, Garrison's included.

A runner is one process for one framework (so imports never mix and its CPU time is its own). It
builds a `Framework` — something that can drive one N-turn durable run to completion — and hands
it to `main`, which measures, in this order and in one process:

1. warm-up runs (not counted);
2. sequential short runs (default 5 turns): wall time per turn, the model's HTTP round trip
   measured in the same process, CPU time per turn, and WAL bytes per turn;
3. sequential long runs (default 50 turns): the same figures;
4. many concurrent short runs (one phase per ``--concurrency`` count) in this one process:
   steps/s of wall time, and process CPU time (user + system, all threads,
   `resource.getrusage`) per step.

After each phase it checks that the framework really did the work: one model call per turn and
one ``noop`` tool call per turn but the last. The result goes to ``--result-file`` as JSON.

Every runner process refuses connections off this machine (the same guard the test suite uses):
all frameworks must talk to the loopback model server and the local Postgres only.

Standard library and psycopg only (both virtualenvs have it); peers pass in their HTTP library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import socket
import statistics
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Same database connection budget for every framework: Garrison's pool is 20 connections plus
# 20 overflow, so peers get pools of 20 growing to 40 where their API allows it.
POOL_SIZE = 20
POOL_MAX = 40
# Same HTTP connection budget too: httpx's defaults, which are Garrison's model client's.
HTTP_MAX_CONNECTIONS = 100
HTTP_MAX_KEEPALIVE = 20
MODEL_NAME = "scripted-tools"

# -- no egress ----------------------------------------------------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
EGRESS_ATTEMPTS: list[str] = []


def _check_local(sock: socket.socket, address: Any) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        # Recorded as well as raised: a framework that swallows the error still fails the run.
        EGRESS_ATTEMPTS.append(repr(address))
        raise PermissionError(f"benchmark process tried to connect off this machine: {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_local(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_local(self, address)
    return _real_connect_ex(self, address)


def install_egress_guard() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]


# Telemetry and tracing off in every framework, and no API key that could ever be valid.
QUIET_ENV = {
    "OPENAI_API_KEY": "bench-no-key",
    "OPENAI_AGENTS_DISABLE_TRACING": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_API_KEY": "",
    "LOGFIRE_SEND_TO_LOGFIRE": "false",
    "DBOS__CLOUD": "false",
    "DO_NOT_TRACK": "1",
    "OTEL_SDK_DISABLED": "true",
}

# -- what the frameworks report back -------------------------------------------------------------

MODEL_MS: list[float] = []
"""Every model HTTP exchange of this process, in ms (appended by `TimedTransport`)."""
_tool_calls = 0


def record_tool_call() -> None:
    """Every framework's ``noop`` tool calls this, so the harness can check the turns happened."""
    global _tool_calls
    _tool_calls += 1


def timed_client(http: Any) -> Any:
    """An ``http.AsyncClient`` that times each model exchange, for a peer's model client.

    ``http`` is the HTTP library the framework's SDK is built on: the OpenAI SDK 3.x, under all
    four peers, uses ``httpx2`` (it also accepts an ``httpx`` client, through a compatibility
    path; its own library is the honest default). The transport sits under the framework's
    client, so what it measures — request sent to last byte of the answer read — is the wire and
    the server, as Garrison's ``model_ms`` is for Garrison.
    """

    class TimedTransport(http.AsyncBaseTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            self._inner = http.AsyncHTTPTransport(
                limits=http.Limits(
                    max_connections=HTTP_MAX_CONNECTIONS,
                    max_keepalive_connections=HTTP_MAX_KEEPALIVE,
                )
            )

        async def handle_async_request(self, request: Any) -> Any:
            start = time.perf_counter()
            response = await self._inner.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            MODEL_MS.append((time.perf_counter() - start) * 1000)
            return http.Response(
                status_code=response.status_code,
                headers=response.headers,
                content=content,
                extensions=response.extensions,
            )

        async def aclose(self) -> None:
            await self._inner.aclose()

    return http.AsyncClient(transport=TimedTransport(), trust_env=False, timeout=60.0)


@dataclass(frozen=True)
class Context:
    db_url: str
    """libpq URL of this framework's own database (fsync on)."""
    model_url: str
    """Base URL of the scripted model server, including ``/v1``."""


class Framework(ABC):
    """One framework able to drive an N-turn tool loop with durable state, to completion."""

    name: str
    version: str
    persists: str
    """What one turn commits to Postgres, in words, for the report."""

    @abstractmethod
    async def run(self, turns: int) -> None:
        """Drive one new run of ``turns`` turns to completion; raise if it did not complete."""

    async def run_many(self, runs: int, turns: int) -> None:
        """``runs`` runs at once in this process; the first failure cancels the others."""
        async with asyncio.TaskGroup() as group:
            for _ in range(runs):
                group.create_task(self.run(turns))

    async def after_phase(self) -> None:  # noqa: B027 - most frameworks have nothing to do
        """Bookkeeping outside the timed region (Garrison reads its recorded model times)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release pools and clients."""


# -- measurement ---------------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class WalMeter:
    """WAL bytes written cluster-wide between two marks (the cluster serves only this run)."""

    def __init__(self, db_url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(db_url, autocommit=True)

    def lsn(self) -> str:
        row = self._conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def since(self, mark: str) -> float:
        row = self._conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [mark]
        ).fetchone()
        assert row is not None
        return float(row[0])

    def close(self) -> None:
        self._conn.close()


class Checker:
    """Counts model and tool calls across a phase, so a framework that skipped work fails."""

    def __init__(self) -> None:
        self._model = len(MODEL_MS)
        self._tools = _tool_calls

    def check(self, phase: str, runs: int, turns: int) -> list[float]:
        model = MODEL_MS[self._model :]
        tools = _tool_calls - self._tools
        if len(model) != runs * turns or tools != runs * (turns - 1):
            raise RuntimeError(
                f"{phase}: expected {runs * turns} model calls and {runs * (turns - 1)} tool "
                f"calls, saw {len(model)} and {tools}"
            )
        return model


async def sequential(fw: Framework, phase: str, runs: int, turns: int) -> dict[str, Any]:
    checker = Checker()
    per_turn: list[float] = []
    cpu = _cpu_s()
    for _ in range(runs):
        start = time.perf_counter()
        await fw.run(turns)
        per_turn.append((time.perf_counter() - start) * 1000 / turns)
    cpu = _cpu_s() - cpu
    await fw.after_phase()
    model = checker.check(phase, runs, turns)
    p50 = statistics.median(per_turn)
    model_p50 = statistics.median(model)
    return {
        "runs": runs,
        "turns": turns,
        "per_turn_ms_p50": p50,
        "per_turn_ms_p90": _pct(per_turn, 0.9),
        "model_ms_p50": model_p50,
        "overhead_ms_p50": p50 - model_p50,
        "cpu_ms_per_turn": cpu * 1000 / (runs * turns),
    }


async def concurrent(fw: Framework, runs: int, turns: int) -> dict[str, Any]:
    checker = Checker()
    cpu = _cpu_s()
    start = time.perf_counter()
    await fw.run_many(runs, turns)
    elapsed = time.perf_counter() - start
    cpu = _cpu_s() - cpu
    await fw.after_phase()
    model = checker.check("concurrent", runs, turns)
    steps = runs * turns
    return {
        "runs": runs,
        "turns": turns,
        "steps": steps,
        "elapsed_s": elapsed,
        "steps_per_s": steps / elapsed,
        "cpu_s": cpu,
        "cpu_ms_per_step": cpu * 1000 / steps,
        "steps_per_cpu_s": steps / cpu if cpu > 0 else float("inf"),
        "model_ms_p50": statistics.median(model),
    }


async def measure(fw: Framework, args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {"framework": fw.name, "version": fw.version, "persists": fw.persists}
    checker = Checker()
    for _ in range(args.warmup):
        await fw.run(args.short)
    await fw.after_phase()
    checker.check("warm-up", args.warmup, args.short)
    wal = WalMeter(ctx.db_url)
    try:
        mark = wal.lsn()
        result["short"] = await sequential(fw, "short", args.runs, args.short)
        short_wal = wal.since(mark)
        mark = wal.lsn()
        result["long"] = await sequential(fw, "long", args.long_runs, args.long)
        long_wal = wal.since(mark)
    finally:
        wal.close()
    result["short"]["wal_bytes_per_turn"] = short_wal / (args.runs * args.short)
    result["long"]["wal_bytes_per_turn"] = long_wal / (args.long_runs * args.long)
    result["concurrent"] = []
    for runs in args.concurrency:
        try:
            result["concurrent"].append(await concurrent(fw, runs, args.short))
        except Exception as exc:
            # A framework that cannot take this many runs at once keeps its sequential figures;
            # the failure is the finding at this scale.
            result["concurrent"].append({"runs": runs, "turns": args.short, "error": _why(exc)})
    return result


def _why(exc: BaseException) -> str:
    """The first real cause, through a TaskGroup's exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one framework's side of bench.durable_overhead")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--short", type=int, default=5, help="turns per short run")
    parser.add_argument("--long", type=int, default=50, help="turns per long run")
    parser.add_argument("--runs", type=int, default=30, help="sequential short runs")
    parser.add_argument("--long-runs", type=int, default=6, help="sequential long runs")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted short runs first")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
        default=[1000],
        help="concurrent short runs, one phase per comma-separated count",
    )
    parser.add_argument("--result-file", type=Path, required=True)
    return parser.parse_args(argv)


def main(open_framework: Callable[[Context], Awaitable[Framework]]) -> None:
    """Entry point of a runner: measure the framework ``open_framework`` builds, write JSON."""
    args = parse_args()
    os.environ.update(QUIET_ENV)
    install_egress_guard()
    ctx = Context(db_url=args.db_url, model_url=args.model_url)

    async def go() -> dict[str, Any]:
        fw = await open_framework(ctx)
        try:
            return await measure(fw, args, ctx)
        finally:
            await fw.aclose()

    try:
        result = asyncio.run(go())
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    if EGRESS_ATTEMPTS:
        result["error"] = f"connections off this machine were attempted: {EGRESS_ATTEMPTS}"
    result["egress_attempts"] = EGRESS_ATTEMPTS
    args.result_file.write_text(json.dumps(result, indent=2))
    if "error" in result:
        with contextlib.suppress(Exception):
            print(result.get("traceback", result["error"]), flush=True)
        raise SystemExit(1)
