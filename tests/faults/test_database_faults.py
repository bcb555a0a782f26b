"""The database failing under the appliance: connections terminated mid-run, and the server
stopped under a running API.

Already proven in `tests/api/test_unavailable.py`, and not repeated here: a database that does
not exist is 503 `database_unavailable`, and so is one dropped under a live app. What only a
real outage shows is added here: the server itself stopped (every connection and the socket
gone) under a `garrison serve` process, answered with 503 and a JSON error, and the same
process serving again once the server is back, with no restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.runtime import Settings
from datastore import migrate
from datastore.embedded import EmbeddedPostgres
from tests.cli.conftest import Proc, free_port, in_services, subprocess_env, tenant
from tests.conftest import TenantFixture, make_tenant
from tests.faults.conftest import (
    Fleet,
    Ledger,
    ScriptedRuns,
    finish,
    search,
    submit,
)

RUNS = 20
STEPS = 4
TERMINATE_AT = (10, 20, 30, 40, 50)
"""Steps committed (of 80) at which every client connection of the database is terminated."""
TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


def test_workers_survive_terminated_database_connections_mid_run(
    settings: Settings,
    runs_script: ScriptedRuns,
    ledger: Ledger,
    fleet_for: Callable[..., Fleet],
) -> None:
    fx = tenant(settings)
    tasks = [
        runs_script.plan(
            f"outage-{i:02d}", *[search(f"q{i} part {s}") for s in range(1, STEPS)], finish(f"a{i}")
        )
        for i in range(RUNS)
    ]
    runs_script.latency_s = 0.05  # keeps runs in flight while connections are cut
    # A run cut off mid-step is abandoned by its worker and claimed again when its lease lapses,
    # which counts towards parking; several cuts at one step must not park it here.
    fleet = fleet_for(concurrency=5, GARRISON_MAX_RUN_ATTEMPTS="10")
    fleet.wait_ready(fleet.start(2))
    ids = list(submit(settings, fx, "assistant", tasks).values())

    terminated: list[int] = []
    pending = list(TERMINATE_AT)

    def committed() -> int:
        return int(ledger.rows("SELECT count(*) AS n FROM steps")[0]["n"])

    def cut_connections_then_check_done() -> bool:
        # Faults are injected on progress, not on a clock: each cut lands while runs are mid-way.
        if pending and committed() >= pending[0]:
            pending.pop(0)
            terminated.append(len(ledger.rows(TERMINATE)))
        return ledger.all_succeeded(ids) and not pending

    fleet.keep(2, until=cut_connections_then_check_done, timeout=120, what="runs through outages")

    assert len(terminated) == len(TERMINATE_AT)
    assert all(n > 0 for n in terminated), terminated  # each cut hit live connections
    assert ledger.statuses(ids) == {"succeeded": RUNS}
    for run_id in ids:
        assert ledger.step_numbers(run_id) == list(range(1, STEPS + 1))
    assert ledger.duplicate_steps() == []
    # The workers stayed up through it all: none died, none was replaced.
    assert len(fleet.alive()) == len(fleet.procs) == 2


# -- the database server stopped under the API ---------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres server of this test's own, so stopping it disturbs no other test."""
    server = EmbeddedPostgres(tmp_path / "own-pg")
    migrate.upgrade(server.start())
    yield server
    server.stop()


def with_database(settings: Settings, url: str) -> Settings:
    database = settings.database.model_copy(update={"database_url": url})
    return settings.model_copy(update={"database": database})


def test_the_api_answers_503_while_the_database_is_down_and_recovers_after(
    settings: Settings,
    own_server: EmbeddedPostgres,
    spawn: Callable[..., Proc],
    cli_env: dict[str, str],
) -> None:
    url = own_server.start()  # attaches to the running server; the URL of Garrison's database
    fx: TenantFixture = in_services(with_database(settings, url), lambda s: make_tenant(s, "acme"))
    port = free_port()
    env = subprocess_env(**{**cli_env, "GARRISON_DATABASE_URL": url})
    api = spawn("serve", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    api.wait_http(f"{base}/healthz", 60)
    auth = {"Authorization": f"Bearer {fx.secret}"}
    run = {"agent": "assistant", "input": "How much leave?"}

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{base}{path}", headers=auth, timeout=30, **kwargs)

    assert call("GET", "/v1/runs").status_code == 200
    assert call("GET", "/readyz").status_code == 200

    own_server.stop()  # pg_ctl stop: the server is gone, connections and socket with it
    for method, path, body in [("GET", "/v1/runs", None), ("POST", "/v1/runs", run)]:
        response = call(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "database_unavailable", error
        assert error["message"], error
        assert error["request_id"], error
        assert response.headers["retry-after"] == "5"
        assert str(own_server.pgdata) not in response.text  # where the database is stays untold
    ready = call("GET", "/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "not_ready"
    assert call("GET", "/healthz").status_code == 200  # the process itself is alive

    own_server.start()
    # The same API process serves again: its pool drops the dead connections (pre-ping).
    assert call("GET", "/v1/runs").status_code == 200
    submitted = call("POST", "/v1/runs", json=run)
    assert submitted.status_code == 202, submitted.text
    assert call("GET", f"/v1/runs/{submitted.json()['id']}").json()["status"] == "queued"
    assert call("GET", "/readyz").status_code == 200
    assert api.popen.poll() is None
    assert "Traceback" not in api.stderr, api.stderr
