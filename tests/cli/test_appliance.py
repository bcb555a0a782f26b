"""`garrison up`, `serve` and `worker` as real processes, stopped by real signals.

The first test is the README's first command: no database configured, so `up` creates and
starts its own embedded PostgreSQL in the data directory, and must stop it again on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pytest

from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import (
    ROOT,
    Cli,
    Proc,
    free_port,
    in_services,
    poll_run,
    subprocess_env,
    tenant,
)

Spawn = Callable[..., Proc]


def post_run(base: str, secret: str, text: str, agent: str = "assistant") -> str:
    response = httpx.post(
        f"{base}/v1/runs",
        headers={"Authorization": f"Bearer {secret}"},
        json={"agent": agent, "input": text},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


def stdout_parses(proc: Proc) -> bool:
    try:
        json.loads(proc.stdout)
    except ValueError:
        return False
    return True


def postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split("\n", 1)[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by the embedded server's own user
        return True
    return True


def test_up_end_to_end_with_embedded_postgres(
    spawn: Spawn, tmp_path: Path, scripted_model: ScriptedModelServer
) -> None:
    data_dir = tmp_path / "garrison"
    port = free_port()
    env = subprocess_env(
        GARRISON_DATA_DIR=str(data_dir),
        GARRISON_CHAT_URL=scripted_model.base_url,
        GARRISON_EMBED_URL=scripted_model.base_url,
        GARRISON_POLL_INTERVAL_S="0.05",
    )
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "27 days (Annual leave)"}})
    up = spawn("up", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    up.wait_http(f"{base}/healthz", timeout=60)
    up.wait_for(lambda: "press Ctrl-C to stop" in up.stdout, 10, "the ready banner")

    out = up.stdout
    assert f"in {(data_dir / 'postgres').resolve()} (first start) ... ok (" in out
    assert "migrating the database schema ... ok" in out
    assert "5 document(s) added" in out
    assert "ready in " in out
    assert f"API at {base}" in out
    key_file = data_dir / "demo-api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = key_file.read_text().strip()
    assert f'curl -s -X POST {base}/v1/runs -H "Authorization: Bearer {secret}"' in out
    assert "garrison runs show <id" in out

    run_id = post_run(base, secret, "How many days of annual leave do I get?")
    final = poll_run(base, secret, run_id)
    assert final["status"] == "succeeded", final
    assert final["output"] == "27 days (Annual leave)"

    # The CLI beside a running `up` attaches to the same embedded server.
    shown = subprocess.run(
        [sys.executable, "-m", "ops.cli", "runs", "show", run_id, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    steps = json.loads(shown.stdout)["steps"]
    assert [s["tool"] for s in steps] == ["search_documents", "finish"]
    titles = [hit["title"] for hit in steps[0]["result"]["hits"]]
    assert "Annual leave policy" in titles
    assert steps[0]["context"]["passages"]  # retrieved from the seeded demo documents
    assert postmaster_running(data_dir / "postgres")  # the CLI let go without stopping it

    assert up.stop(signal.SIGINT, timeout=30) == 0, up.describe()
    assert "stopped" in up.stdout
    assert "Traceback" not in up.stderr
    assert not postmaster_running(data_dir / "postgres")


def test_up_without_models_comes_up_and_runs_fail_clearly(
    spawn: Spawn, tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    env = subprocess_env(GARRISON_DATABASE_URL=database_url, GARRISON_DATA_DIR=str(tmp_path))
    up = spawn("up", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    up.wait_http(f"{base}/healthz", timeout=60)
    up.wait_for(lambda: "press Ctrl-C to stop" in up.stdout, 10, "the ready banner")
    assert "no chat model reachable: set GARRISON_CHAT_URL" in up.stdout
    assert "runs will fail with model_unavailable" in up.stdout
    assert "no embedding model reachable: set GARRISON_EMBED_URL" in up.stdout
    assert "demo documents not loaded" in up.stdout
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503

    secret = (tmp_path / "demo-api-key").read_text().strip()
    final = poll_run(base, secret, post_run(base, secret, "Hello?"))
    assert final["status"] == "failed"
    assert final["failure"]["code"] == "model_unavailable"
    assert up.stop(signal.SIGTERM) == 0, up.describe()


def test_up_again_reuses_the_demo_key_and_mints_a_new_one_when_revoked(
    spawn: Spawn, cli: Cli, tmp_path: Path, database_url: str
) -> None:
    env = subprocess_env(GARRISON_DATABASE_URL=database_url, GARRISON_DATA_DIR=str(tmp_path))
    secrets = []
    for round_ in range(3):
        port = free_port()
        up = spawn("up", "--port", str(port), "--json", env=env)
        up.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        up.wait_for(partial(stdout_parses, up), 10, "the ready document")
        ready = json.loads(up.stdout)
        assert ready["status"] == "ready"
        assert ready["api_url"] == f"http://127.0.0.1:{port}"
        assert ready["demo"]["key_file"] == str(tmp_path / "demo-api-key")
        secrets.append((tmp_path / "demo-api-key").read_text().strip())
        assert secrets[-1] in ready["demo"]["curl"]
        assert up.stop() == 0, up.describe()
        if round_ == 1:
            key_id = next(k["id"] for k in cli.json("keys", "list", "-t", "demo")["keys"])
            cli.ok("keys", "revoke", key_id, "-y")
    assert secrets[0] == secrets[1] != secrets[2]
    agents = cli.json("agents", "list", "-t", "demo")["agents"]
    assert [(a["name"], a["version"]) for a in agents] == [("assistant", 1)]  # never rewritten


def test_up_refuses_a_port_in_use(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli.fails(3, "port_in_use", "up", "--port", port)
    assert f"127.0.0.1:{port} is already in use" in result.stderr


@pytest.mark.parametrize("json_out", [False, True], ids=["human", "json"])
def test_serve_and_worker_as_separate_processes(
    spawn: Spawn,
    settings: Settings,
    database_url: str,
    scripted_model: ScriptedModelServer,
    json_out: bool,
) -> None:
    acme = tenant(settings)
    env = subprocess_env(
        GARRISON_DATABASE_URL=database_url,
        GARRISON_CHAT_URL=scripted_model.base_url,
        GARRISON_EMBED_URL=scripted_model.base_url,
        GARRISON_POLL_INTERVAL_S="0.05",
    )
    mode = ["--json"] if json_out else []
    port = free_port()
    api = spawn("serve", "--port", str(port), *mode, env=env)
    base = f"http://127.0.0.1:{port}"
    api.wait_http(f"{base}/healthz", timeout=60)
    run_id = post_run(base, acme.secret, "Anyone there?")

    async def status(services: Services) -> str:
        run = await services.runs.get(uuid.UUID(run_id), None)
        return str(run.status)

    assert in_services(settings, status) == "queued"  # the API alone does not run anything

    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "here"}})
    worker = spawn("worker", "--concurrency", "2", "--json-logs", *mode, env=env)
    final = poll_run(base, acme.secret, run_id)
    assert final["status"] == "succeeded"
    assert final["output"] == "here"
    logs = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    assert any("succeeded" in entry["message"] for entry in logs), worker.stderr

    assert worker.stop(signal.SIGTERM) == 0, worker.describe()
    assert api.stop(signal.SIGINT) == 0, api.describe()
    if json_out:
        ready_api, ready_worker = json.loads(api.stdout), json.loads(worker.stdout)
        assert ready_api["api_url"] == base
        assert ready_worker["concurrency"] == 2
        assert ready_worker["status"] == ready_api["status"] == "ready"
        assert "stopped" in api.stderr  # stdout holds the one document only
    else:
        assert "API ready in " in api.stdout
        assert f" at {base}" in api.stdout
        assert "(2 run(s) at a time)" in worker.stdout
        assert "stopped" in worker.stdout
