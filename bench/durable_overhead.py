"""Per-turn overhead with durable commits: Garrison against LangGraph (Postgres checkpointer),
DBOS, pydantic-ai and the OpenAI Agents SDK, side by side in one run.

Every framework drives the same N-turn tool loop against the same scripted model server
(`bench.peers.model_server`: real HTTP on loopback, instant answers; the model calls a ``noop``
tool once per turn and answers on turn N) and commits each turn to the same embedded Postgres
(fsync on), each in its own database. Each framework runs in its own process: Garrison with
Garrison's virtualenv (`bench.loop_overhead`), the peers with the benchmark's own
(`bench/.peers-venv`, from `bench/peers/requirements.txt`; `make bench-peers` creates it). The
harness they share (`bench.peers.harness`) measures per-turn wall time at 5 and at 50 turns with
the model's round trip measured in the same process, and steps/s with CPU time per step across
many concurrent runs. Floors from the same run: one INSERT+COMMIT and one raw httpx POST.

    .venv/bin/python -m bench.durable_overhead [--frameworks garrison,langgraph,...]
        [--runs 30] [--long-runs 6] [--turns 5,50] [--concurrency 1000]
        [--peer-concurrency N] [--json-out results.json]

Timings on a shared machine are noisy; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.peers.harness import QUIET_ENV
from datastore.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
APP_PYTHON = Path(sys.executable)
PEERS_PYTHON = REPO / "bench" / ".peers-venv" / "bin" / "python"

# Targets from the issue ("Durable runs"), checked against Garrison's row.
TARGET_OVERHEAD_MS = 0.5
TARGET_LONG_RATIO = 1.2
TARGET_STEPS_PER_CPU_S = 2000.0


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    module: str
    peer: bool
    """Runs in the peers' virtualenv (else in Garrison's)."""


SPECS = [
    Spec("garrison", "Garrison", "bench.loop_overhead", peer=False),
    Spec("langgraph", "LangGraph + PostgresSaver", "bench.peers.langgraph_runner", peer=True),
    Spec("dbos", "DBOS", "bench.peers.dbos_runner", peer=True),
    Spec("pydantic-ai", "pydantic-ai", "bench.peers.pydantic_ai_runner", peer=True),
    Spec("openai-agents", "OpenAI Agents SDK", "bench.peers.openai_agents_runner", peer=True),
]


# -- floors --------------------------------------------------------------------------------------


def floor_body() -> bytes:
    """A first-turn tool-calling request, the size the peers send."""
    noop = {
        "type": "function",
        "function": {
            "name": "noop",
            "description": "Does nothing.",
            "parameters": {
                "type": "object",
                "properties": {"note": {"type": "string"}},
                "required": ["note"],
            },
        },
    }
    return json.dumps(
        {
            "model": "scripted-tools",
            "messages": [
                {"role": "system", "content": "Benchmark agent."},
                {"role": "user", "content": "turns=2 go"},
            ],
            "tools": [noop],
        }
    ).encode()


async def floors(db_url: str, model_url: str, n: int) -> dict[str, float]:
    commit: list[float] = []
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS floor (id bigserial, body jsonb)")
        await conn.commit()
        for _ in range(n):
            t = time.perf_counter()
            await conn.execute("INSERT INTO floor (body) VALUES (%s)", ['{"x": 1}'])
            await conn.commit()
            commit.append((time.perf_counter() - t) * 1000)
    body = floor_body()
    http: list[float] = []
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post(
                f"{model_url}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            r.raise_for_status()
            http.append((time.perf_counter() - t) * 1000)
    return {"commit_ms_p50": statistics.median(commit), "http_ms_p50": statistics.median(http)}


# -- infrastructure ------------------------------------------------------------------------------


class ModelServerProcess:
    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [str(APP_PYTHON), "-m", "bench.peers.model_server"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the scripted model server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def db_url_for(admin_url: str, database: str) -> str:
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{database}?{query}"


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return db_url_for(admin_url, name)


def server_settings(admin_url: str) -> dict[str, str]:
    names = ["server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def xact_commits(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [database]
        ).fetchone()
    return int(row[0]) if row else 0


# -- one framework -------------------------------------------------------------------------------


def run_framework(
    spec: Spec, args: argparse.Namespace, admin_url: str, model_url: str, work: Path, round_: int
) -> dict[str, Any]:
    python = Path(args.peers_python) if spec.peer else APP_PYTHON
    if not python.exists():
        return {"error": f"{python} is missing: run `make bench-peers` to create the peers' venv"}
    database = "bench_" + spec.key.replace("-", "_")
    db_url = create_database(admin_url, database)
    result_file = work / f"{spec.key}-round{round_}.json"
    log_file = work / f"{spec.key}-round{round_}.log"
    # Garrison also runs at the peers' scale, so one column compares like with like.
    levels = [args.peer_concurrency] if spec.peer else args.garrison_levels
    cmd = [str(python), "-m", spec.module]
    if not spec.peer:
        cmd.append("--runner")
    cmd += [
        "--db-url", db_url,
        "--model-url", model_url,
        "--short", str(args.short),
        "--long", str(args.long),
        "--runs", str(args.runs),
        "--long-runs", str(args.long_runs),
        "--warmup", str(args.warmup),
        "--concurrency", ",".join(map(str, levels)),
        "--result-file", str(result_file),
    ]  # fmt: skip
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(REPO)}
    before = xact_commits(admin_url, database)
    started = time.perf_counter()
    print(f"  round {round_}/{args.rounds}: {spec.label} ...", end="", flush=True, file=sys.stderr)
    with log_file.open("w") as log:
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
            )
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    took = time.perf_counter() - started
    print(f" {took:.0f} s", file=sys.stderr, flush=True)
    if result_file.exists():
        result: dict[str, Any] = json.loads(result_file.read_text())
    else:
        result = {"error": "timed out" if code is None else f"exited {code} without a result"}
    if "error" in result:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        result["log_tail"] = tail
        print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
        return result
    # Backends flush their statistics when they exit, which they did with the runner.
    time.sleep(0.5)
    turns = (
        args.warmup * args.short
        + args.runs * args.short
        + args.long_runs * args.long
        + sum(levels) * args.short
    )
    result["xacts_per_turn"] = (xact_commits(admin_url, database) - before) / turns
    result["wall_s"] = took
    return result


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds of a framework: the median of each figure.

    Rounds that failed are counted and their errors kept; if every round failed, so does this.
    """
    ok = [r for r in rounds if "error" not in r]
    errors = [r["error"] for r in rounds if "error" in r]
    if not ok:
        return {**rounds[-1], "failed_rounds": len(errors)}
    out: dict[str, Any] = {k: ok[0][k] for k in ("framework", "version", "persists")}
    for phase in ("short", "long"):
        out[phase] = _median_fields([r[phase] for r in ok])
    out["concurrent"] = []
    for first in ok[0]["concurrent"]:
        phases = [c for r in ok for c in r["concurrent"] if c["runs"] == first["runs"]]
        good = [c for c in phases if "error" not in c]
        failed = [c["error"] for c in phases if "error" in c]
        merged = _median_fields(good) if good else {"runs": first["runs"], "error": failed[0]}
        merged["failed_rounds"] = len(failed)
        if failed:
            merged["errors"] = failed
        out["concurrent"].append(merged)
    out["xacts_per_turn"] = statistics.median(r["xacts_per_turn"] for r in ok)
    out["wall_s"] = sum(r["wall_s"] for r in ok)
    out["rounds"] = len(ok)
    if errors:
        out["failed_rounds"] = len(errors)
        out["errors"] = errors
    return out


def _median_fields(phases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: statistics.median(p[k] for p in phases)
        for k, v in phases[0].items()
        if isinstance(v, int | float)
    }


# -- report --------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _get(result: dict[str, Any], phase: str, key: str) -> float | None:
    value = result.get(phase, {}).get(key)
    return None if value is None else float(value)


def at_scale(result: dict[str, Any], runs: int) -> dict[str, Any]:
    """The result with ``concurrent`` narrowed to the phase of ``runs`` concurrent runs."""
    phases = [c for c in result.get("concurrent", []) if c.get("runs") == runs]
    return {**result, "concurrent": phases[0] if phases else {}}


def report(
    labels: dict[str, str],
    all_results: dict[str, dict[str, Any]],
    fl: dict[str, float],
    args: argparse.Namespace,
) -> tuple[str, dict[str, Any]]:
    """The markdown report, and Garrison's figures against the issue's targets."""
    s, n, scale = args.short, args.long, args.peer_concurrency
    results = {k: at_scale(r, scale) for k, r in all_results.items()}
    commit, http = fl["commit_ms_p50"], fl["http_ms_p50"]
    lines = [
        f"Floors: one INSERT+COMMIT p50 {commit:.3f} ms; one raw httpx POST to the model "
        f"server p50 {http:.3f} ms.",
        "",
        f"| framework | turn p50 @{s} (ms) | model p50 (ms) | overhead @{s} (ms) "
        f"| turn p50 @{n} (ms) | overhead @{n} (ms) | {n}/{s} turn | {n}/{s} overhead "
        f"| steps/s, {scale} concurrent | CPU ms/step | steps per CPU-s | xacts/turn "
        f"| WAL B/turn @{s} |",
        "|" + "---|" * 13,
    ]
    failures: list[str] = []
    for key, r in results.items():
        if "error" in r:
            lines.append(f"| {labels[key]} | failed: {r['error'][:80]} |" + " |" * 11)
            continue
        if "error" in r["concurrent"]:
            failures.append(f"- {labels[key]}: {r['concurrent']['error'][:200]}")
        elif r["concurrent"].get("failed_rounds"):
            failures.append(
                f"- {labels[key]}: {r['concurrent']['failed_rounds']} round(s) failed "
                f"({r['concurrent']['errors'][0][:160]}); its figures are from the others"
            )
        if r.get("failed_rounds"):
            failures.append(
                f"- {labels[key]}: {r['failed_rounds']} whole round(s) failed "
                f"({r['errors'][0][:160]}); its figures are from the others"
            )
        t5, t50 = _get(r, "short", "per_turn_ms_p50"), _get(r, "long", "per_turn_ms_p50")
        o5, o50 = _get(r, "short", "overhead_ms_p50"), _get(r, "long", "overhead_ms_p50")
        lines.append(
            f"| {labels[key]} | {_f(t5, 3)} | {_f(_get(r, 'short', 'model_ms_p50'), 3)} "
            f"| {_f(o5, 3)} | {_f(t50, 3)} | {_f(o50, 3)} | {_ratio(t50, t5)} | {_ratio(o50, o5)} "
            f"| {_f(_get(r, 'concurrent', 'steps_per_s'), 0)} "
            f"| {_f(_get(r, 'concurrent', 'cpu_ms_per_step'), 3)} "
            f"| {_f(_get(r, 'concurrent', 'steps_per_cpu_s'), 0)} "
            f"| {_f(r.get('xacts_per_turn'), 1)} "
            f"| {_f(_get(r, 'short', 'wal_bytes_per_turn'), 0)} |"
        )
    if failures:
        lines += ["", "Failures (a failed concurrent phase reads n/a):", *failures]
    g = results.get("garrison", {})
    g_ok = bool(g) and "error" not in g
    lines += [
        "",
        f"| framework | overhead @{s} vs Garrison | turn @{s} vs Garrison | steps/s vs Garrison "
        f"| CPU/step vs Garrison | overhead @{s} vs one INSERT+COMMIT "
        f"| turn @{s} vs INSERT+COMMIT + POST | model p50 vs raw POST |",
        "|" + "---|" * 8,
    ]
    for key, r in results.items():
        if "error" in r:
            continue

        def vs_g(phase: str, name: str, r: dict[str, Any] = r) -> str:
            return _ratio(_get(r, phase, name), _get(g, phase, name)) if g_ok else "n/a"

        lines.append(
            f"| {labels[key]} | {vs_g('short', 'overhead_ms_p50')} "
            f"| {vs_g('short', 'per_turn_ms_p50')} | {vs_g('concurrent', 'steps_per_s')} "
            f"| {vs_g('concurrent', 'cpu_ms_per_step')} "
            f"| {_ratio(_get(r, 'short', 'overhead_ms_p50'), commit)} "
            f"| {_ratio(_get(r, 'short', 'per_turn_ms_p50'), commit + http)} "
            f"| {_ratio(_get(r, 'short', 'model_ms_p50'), http)} |"
        )
    targets: dict[str, Any] = {}
    if g_ok:
        targets = garrison_targets(at_scale(all_results["garrison"], args.concurrency))
        lines += ["", targets_line(targets, args.concurrency)]
    lines += ["", "What each framework commits per turn:"]
    for key, r in results.items():
        if "error" not in r:
            lines.append(f"- {labels[key]} ({r.get('version', '?')}): {r.get('persists', '?')}")
    return "\n".join(lines), targets


def garrison_targets(g: dict[str, Any]) -> dict[str, Any]:
    """Garrison's row (``concurrent`` at the target scale) against the issue's targets."""
    overhead = _get(g, "short", "overhead_ms_p50")
    t5, t50 = _get(g, "short", "per_turn_ms_p50"), _get(g, "long", "per_turn_ms_p50")
    ratio = None if t5 is None or t50 is None else t50 / t5
    per_cpu = _get(g, "concurrent", "steps_per_cpu_s")
    return {
        "overhead_ms_p50": {
            "target": TARGET_OVERHEAD_MS,
            "got": overhead,
            "met": overhead is not None and overhead <= TARGET_OVERHEAD_MS,
        },
        "long_over_short_turn": {
            "target": TARGET_LONG_RATIO,
            "got": ratio,
            "met": ratio is not None and ratio <= TARGET_LONG_RATIO,
        },
        "steps_per_cpu_s": {
            "target": TARGET_STEPS_PER_CPU_S,
            "got": per_cpu,
            "steps_per_s": _get(g, "concurrent", "steps_per_s"),
            "error": g["concurrent"].get("error"),
            "met": per_cpu is not None and per_cpu >= TARGET_STEPS_PER_CPU_S,
        },
    }


def targets_line(t: dict[str, Any], scale: int) -> str:
    def verdict(name: str) -> str:
        return "met" if t[name]["met"] else "NOT met"

    cpu = t["steps_per_cpu_s"]
    at_scale_text = (
        f"{_f(cpu['got'], 0)} ({_f(cpu['steps_per_s'], 0)} steps/s of wall time)"
        if cpu["error"] is None
        else f"failed ({cpu['error'][:120]})"
    )
    return (
        f"Garrison against the targets: overhead p50 <= {TARGET_OVERHEAD_MS} ms: "
        f"{_f(t['overhead_ms_p50']['got'], 3)} ms ({verdict('overhead_ms_p50')}); per-turn "
        f"cost at the long runs <= {TARGET_LONG_RATIO}x the short: "
        f"{_f(t['long_over_short_turn']['got'])}x ({verdict('long_over_short_turn')}); "
        f">= {TARGET_STEPS_PER_CPU_S:,.0f} steps per CPU-second across {scale} concurrent runs: "
        f"{at_scale_text} ({verdict('steps_per_cpu_s')})."
    )


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--frameworks",
        default=",".join(s.key for s in SPECS),
        help="comma-separated subset of: " + ", ".join(s.key for s in SPECS),
    )
    parser.add_argument("--runs", type=int, default=30, help="sequential short runs")
    parser.add_argument("--long-runs", type=int, default=6, help="sequential long runs")
    parser.add_argument("--turns", default="5,50", help="SHORT,LONG turns per run")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted short runs first")
    parser.add_argument(
        "--concurrency", type=int, default=1000, help="Garrison's target scale of concurrent runs"
    )
    parser.add_argument(
        "--peer-concurrency",
        type=int,
        default=200,
        help="concurrent runs for every framework, Garrison included (the compared column)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="repeat everything; figures are medians of rounds"
    )
    parser.add_argument("--floor-samples", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per framework")
    parser.add_argument("--peers-python", default=str(PEERS_PYTHON))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.short, args.long = (int(t) for t in args.turns.split(","))
    args.garrison_levels = sorted({args.peer_concurrency, args.concurrency})
    known = {s.key for s in SPECS}
    args.selected = [k.strip() for k in args.frameworks.split(",") if k.strip()]
    unknown = set(args.selected) - known
    if unknown:
        parser.error(f"unknown frameworks: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = [s for s in SPECS if s.key in args.selected]
    work = Path(tempfile.mkdtemp(prefix="garrison-durable-bench-"))
    embedded = EmbeddedPostgres(work)
    started = time.perf_counter()
    load_before = os.getloadavg()
    model: ModelServerProcess | None = None
    try:
        embedded.start()
        admin_url = embedded.admin_url()
        settings = server_settings(admin_url)
        if settings["fsync"] != "on" or settings["synchronous_commit"] != "on":
            raise SystemExit(f"durable commits need fsync and synchronous_commit on: {settings}")
        model = ModelServerProcess()
        print(
            f"Postgres {settings['server_version']} (fsync {settings['fsync']}, "
            f"synchronous_commit {settings['synchronous_commit']}, "
            f"wal_sync_method {settings['wal_sync_method']}); model server {model.url}",
            file=sys.stderr,
        )
        floor_url = create_database(admin_url, "bench_floor")
        raw: dict[str, list[dict[str, Any]]] = {s.key: [] for s in specs}
        floor_rounds = []
        for r in range(args.rounds):
            floor_rounds.append(asyncio.run(floors(floor_url, model.url, args.floor_samples)))
            # Each round starts with another framework, so drift on the machine spreads out.
            for spec in specs[r % len(specs) :] + specs[: r % len(specs)]:
                result = run_framework(spec, args, admin_url, model.url, work, r + 1)
                raw[spec.key].append(result)
        fl_after = asyncio.run(floors(floor_url, model.url, args.floor_samples))
        fl = {k: statistics.median(f[k] for f in floor_rounds) for k in floor_rounds[0]}
        results = {key: combine(rounds) for key, rounds in raw.items()}
    finally:
        if model is not None:
            model.stop()
        embedded.stop()
    load_after = os.getloadavg()
    labels = {s.key: s.label for s in SPECS}
    table, targets = report(labels, results, fl, args)
    print()
    print(
        f"Durable per-turn overhead, scripted model, {args.short}- and {args.long}-turn runs "
        f"({args.runs} and {args.long_runs} sequential runs), concurrent runs of {args.short} "
        f"turns in one process; each figure the median of {args.rounds} round(s), each round a "
        f"fresh process per framework. {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (a shared machine: noisy). "
        f"Floors again at the end: commit {fl_after['commit_ms_p50']:.3f} ms, "
        f"POST {fl_after['http_ms_p50']:.3f} ms."
    )
    print()
    print(table)
    if args.json_out is not None:
        document = {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "postgres": settings,
            "settings": {
                "short_turns": args.short,
                "long_turns": args.long,
                "runs": args.runs,
                "long_runs": args.long_runs,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "peer_concurrency": args.peer_concurrency,
                "rounds": args.rounds,
            },
            "floors": fl,
            "floor_rounds": floor_rounds,
            "floors_after": fl_after,
            "frameworks": results,
            "rounds": raw,
            "garrison_targets": targets,
            "table_markdown": table,
            "total_s": time.perf_counter() - started,
        }
        args.json_out.write_text(json.dumps(document, indent=2))
        print(f"\nJSON written to {args.json_out}", file=sys.stderr)
    if any("error" in r for r in results.values()):
        # The logs of the failed runners are in the work directory; the database is stopped.
        print(f"some frameworks failed; their logs are in {work}", file=sys.stderr)
        raise SystemExit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
