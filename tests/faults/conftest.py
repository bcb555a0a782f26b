"""Fault tests: real `garrison worker` processes, killed with SIGKILL where it hurts most.

The scripted model answers from this process, so the test always knows where a worker is: a
worker asking for step k+1 has committed step k and nothing after it. `ScriptedRuns` answers
each run from a plan (task text -> one action per step), counts what was asked per (run, step)
and runs hooks before answering — a hook may SIGKILL the asking worker right there. `Fleet`
keeps worker processes alive (replacing the ones a test killed, failing on any other death) and
finds which process drives a run from the run's `worker_id`. `Ledger` reads the database
directly, so what is asserted is what is stored, not what a service reports.

Subprocess plumbing (`spawn`, `cli_env`) comes from the CLI tests and the SMTP/HTTP sinks from
the outbox tests; they are imported here, not copied.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli import conftest as cli_tests
from tests.cli.conftest import Proc, in_services, subprocess_env
from tests.conftest import TenantFixture, make_tenant
from tests.outbox import conftest as outbox_tests
from tests.outbox.conftest import SENDER, HttpSink, SmtpSink

# Fixtures shared with the CLI and outbox tests; pytest collects them by name from this module.
cli = cli_tests.cli
cli_env = cli_tests.cli_env
no_ambient_garrison_env = cli_tests.no_ambient_garrison_env
spawn = cli_tests.spawn
smtp_sink = outbox_tests.smtp_sink
http_sink = outbox_tests.http_sink

Action = dict[str, Any]
Hook = Callable[[str, int], None]
"""Called with (task, step) on the model server's thread before the answer is sent."""

WORKER_TIMINGS = {
    # A killed worker's run is claimable again 1.5 s later; live ones renew every 0.5 s.
    "GARRISON_LEASE_SECONDS": "1.5",
    "GARRISON_POLL_INTERVAL_S": "0.05",
    "GARRISON_MODEL_TIMEOUT_S": "20",
    "GARRISON_OUTBOX_POLL_INTERVAL_S": "0.05",
    "GARRISON_OUTBOX_DELIVERY_TIMEOUT_S": "2",
    "GARRISON_OUTBOX_LEASE_SECONDS": "4",
    "GARRISON_OUTBOX_BACKOFF_BASE_S": "0.05",
    "GARRISON_OUTBOX_BACKOFF_CAP_S": "0.2",
    # Scripted plans are not a model going round in circles; loop detection has its own tests.
    "GARRISON_LOOP_MAX_REPEATS": "0",
    "GARRISON_LOOP_STALE_WINDOW": "0",
}
ENDED_BADLY = frozenset({"failed", "cancelled", "budget_exhausted", "parked"})
EFFECT_TOOLS = ["search_documents", "http_request", "send_email", "finish"]
READY_TIMEOUT_S = 60.0


# -- the model's side ----------------------------------------------------------------------------


def search(query: str) -> Action:
    return {"tool": "search_documents", "arguments": {"query": query}}


def finish(answer: str = "done") -> Action:
    return {"tool": "finish", "arguments": {"answer": answer}}


def where(request: Mapping[str, Any]) -> tuple[str, int]:
    """(task, step) of a chat request: the task is the first line of the task message, and each
    earlier step added one assistant and one user message after the first two."""
    messages = request["messages"]
    task = str(messages[1]["content"]).split("\n", 1)[0].removeprefix("Task: ")
    return task, (len(messages) - 2) // 2 + 1


class ScriptedRuns:
    """Answers every run from its plan; counts requests per (task, step); runs hooks first."""

    def __init__(self, server: ScriptedModelServer) -> None:
        self.plans: dict[str, list[Action]] = {}
        self.asked: Counter[tuple[str, int]] = Counter()
        self.hooks: list[Hook] = []
        self.latency_s = 0.0
        """How long the "model" thinks before each answer (keeps runs in flight longer)."""
        self._lock = threading.Lock()
        server.set_responder(self._answer)

    def plan(self, task: str, *actions: Action) -> str:
        self.plans[task] = list(actions)
        return task

    def times_asked(self, task: str, step: int) -> int:
        with self._lock:
            return self.asked[(task, step)]

    def asked_of(self, task: str) -> dict[int, int]:
        with self._lock:
            return {s: n for (t, s), n in sorted(self.asked.items()) if t == task}

    def on_ask(self, hook: Hook) -> list[str]:
        """Run `hook` before every answer. What it raises is collected in the returned list, for
        the test to assert empty: raised on the model server's thread, it would be swallowed."""
        problems: list[str] = []

        def reported(task: str, step: int) -> None:
            try:
                hook(task, step)
            except Exception as exc:
                problems.append(repr(exc))

        self.hooks.append(reported)
        return problems

    def _answer(self, request: dict[str, Any]) -> str:
        task, step = where(request)
        with self._lock:
            self.asked[(task, step)] += 1
        for hook in list(self.hooks):
            hook(task, step)
        if self.latency_s:
            time.sleep(self.latency_s)
        return json.dumps(self.plans[task][step - 1])


@pytest.fixture
def runs_script(scripted_model: ScriptedModelServer) -> ScriptedRuns:
    return ScriptedRuns(scripted_model)


# -- the database's side -------------------------------------------------------------------------


@dataclass
class Ledger:
    """Reads (and, for fault injection only, touches) the test's database directly."""

    url: str

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()

    def run(self, run_id: uuid.UUID) -> dict[str, Any]:
        [row] = self.rows("SELECT * FROM runs WHERE id = %s", run_id)
        return row

    def step_numbers(self, run_id: uuid.UUID) -> list[int]:
        rows = self.rows("SELECT number FROM steps WHERE run_id = %s ORDER BY number", run_id)
        return [r["number"] for r in rows]

    def statuses(self, run_ids: Sequence[uuid.UUID]) -> Counter[str]:
        rows = self.rows("SELECT status FROM runs WHERE id = ANY(%s)", list(run_ids))
        return Counter(r["status"] for r in rows)

    def all_succeeded(self, run_ids: Sequence[uuid.UUID]) -> bool:
        """Whether every run succeeded; fails at once on a run that ended any other way."""
        rows = self.rows(
            "SELECT id, status, failure_code, failure_detail FROM runs WHERE id = ANY(%s)",
            list(run_ids),
        )
        ended = [r for r in rows if r["status"] in ENDED_BADLY]
        assert not ended, f"runs ended without succeeding: {ended}"
        return [r["status"] for r in rows].count("succeeded") == len(run_ids)

    def outbox(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT * FROM outbox WHERE run_id = %s ORDER BY step_number, call_index", run_id
        )

    def deliveries(self, run_id: uuid.UUID) -> list[tuple[int, str, str, int]]:
        """The run's outbox rows as (step number, kind, status, attempts), in step order."""
        return [
            (r["step_number"], r["kind"], r["status"], r["attempts"]) for r in self.outbox(run_id)
        ]

    def worker_pid(self, run_id: uuid.UUID) -> int | None:
        """The pid inside the run's `worker_id` (`host:pid:suffix`), if a worker holds it."""
        worker_id = self.run(run_id)["worker_id"]
        return None if worker_id is None else int(str(worker_id).rsplit(":", 2)[1])

    def duplicate_steps(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT run_id, number, count(*) AS n FROM steps GROUP BY run_id, number "
            "HAVING count(*) > 1"
        )


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    return Ledger(database_url)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.02)


def reaches(ledger: Ledger, run_id: uuid.UUID, status: str) -> Callable[[], bool]:
    """Whether the run is in `status` now; fails at once on a run that ended another way."""

    def check() -> bool:
        run = ledger.run(run_id)
        assert run["status"] not in ENDED_BADLY, (run["failure_code"], run["failure_detail"])
        return bool(run["status"] == status)

    return check


def finished_and_delivered(ledger: Ledger, run_id: uuid.UUID) -> Callable[[], bool]:
    """Whether the run succeeded and every effect it queued was delivered."""
    succeeded = reaches(ledger, run_id, "succeeded")
    return lambda: succeeded() and all(r["status"] == "delivered" for r in ledger.outbox(run_id))


# -- tenants, agents and runs --------------------------------------------------------------------


def effect_tenant(settings: Settings, name: str = "acme") -> TenantFixture:
    """A tenant whose `notifier` agent may search, call HTTP, send email and finish."""

    async def create(services: Services) -> TenantFixture:
        fx = await make_tenant(services, name, max_steps=10)
        await services.tenancy.put_agent(
            name,
            "notifier",
            instructions="Look things up, notify people and systems, then answer.",
            tools=EFFECT_TOOLS,
            max_steps=10,
            retrieval_k=0,
            actor="test",
        )
        return fx

    return in_services(settings, create)


def submit(
    settings: Settings, fx: TenantFixture, agent: str, tasks: Sequence[str]
) -> dict[str, uuid.UUID]:
    """Queue one run per task (in order, so workers claim them in that order)."""

    async def go(services: Services) -> dict[str, uuid.UUID]:
        ids = {}
        for task in tasks:
            ids[task] = (await services.runs.submit(fx.principal, agent, task)).id
        return ids

    return in_services(settings, go)


# -- worker processes ----------------------------------------------------------------------------


def worker_env(cli_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    return subprocess_env(**{**cli_env, **WORKER_TIMINGS, **overrides})


def sinks_env(smtp: SmtpSink, http: HttpSink) -> dict[str, str]:
    return {
        "GARRISON_SMTP_HOST": "127.0.0.1",
        "GARRISON_SMTP_PORT": str(smtp.port),
        "GARRISON_SMTP_FROM": SENDER,
        "GARRISON_HTTP_ALLOW_HOSTS": http.host,
    }


def _is_ready(proc: Proc) -> bool:
    return "ready in" in proc.stdout


@dataclass
class Fleet:
    """Worker processes under supervision: a test kills them; nothing else may."""

    spawn: Callable[..., Proc]
    ledger: Ledger
    env: dict[str, str]
    concurrency: int = 4
    procs: list[Proc] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    """Pids this test SIGKILLed on purpose."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, n: int = 1) -> list[Proc]:
        started = [
            self.spawn("worker", "--concurrency", str(self.concurrency), env=self.env)
            for _ in range(n)
        ]
        with self._lock:
            self.procs.extend(started)
        return started

    def wait_ready(self, procs: Sequence[Proc]) -> None:
        for proc in procs:
            proc.wait_for(partial(_is_ready, proc), READY_TIMEOUT_S, "worker ready")

    def alive(self) -> list[Proc]:
        with self._lock:
            return [p for p in self.procs if p.popen.poll() is None]

    def kill(self, proc: Proc) -> None:
        with self._lock:
            self.killed.add(proc.popen.pid)
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()

    def kill_driver(self, run_id: uuid.UUID) -> int:
        """SIGKILL the worker that holds `run_id`; returns its pid."""
        pid = self.ledger.worker_pid(run_id)
        with self._lock:
            [proc] = [p for p in self.procs if p.popen.pid == pid]
        self.kill(proc)
        return proc.popen.pid

    def check_deaths(self) -> None:
        """Fail on a worker that exited without being killed by the test."""
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.popen.poll() is not None and proc.popen.pid not in self.killed:
                raise AssertionError(f"a worker died on its own\n{proc.describe()}")

    def keep(self, n: int, until: Callable[[], bool], timeout: float, what: str) -> None:
        """Keep `n` workers running (replacing killed ones) until `until()` or the deadline."""
        deadline = time.monotonic() + timeout
        while not until():
            self.check_deaths()
            missing = n - len(self.alive())
            if missing > 0:
                self.start(missing)
            if time.monotonic() > deadline:
                logs = "\n".join(p.describe()[-3000:] for p in self.alive())
                raise AssertionError(f"timed out after {timeout} s: {what}\n{logs}")
            time.sleep(0.05)
        self.check_deaths()

    def completed_per_worker(self) -> list[int]:
        """Runs each worker logged as finished (`run ... succeeded after N steps`)."""
        with self._lock:
            procs = list(self.procs)
        return [p.stderr.count(" succeeded after ") for p in procs]


@pytest.fixture
def fleet_for(
    spawn: Callable[..., Proc], ledger: Ledger, cli_env: dict[str, str]
) -> Callable[..., Fleet]:
    def make(concurrency: int = 4, **overrides: str) -> Fleet:
        return Fleet(spawn, ledger, worker_env(cli_env, **overrides), concurrency)

    return make
