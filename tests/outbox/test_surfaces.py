"""The outbox as people and clients reach it: `GET /v1/runs/{id}/effects`, `garrison outbox
list|retry`, and a real `garrison worker` process that delivers what its runs queue and stops
cleanly on SIGTERM."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent.api.app import create_app
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import assert_error, bearer, live_server
from tests.cli.conftest import Cli, Proc, in_services, subprocess_env
from tests.conftest import TenantFixture, make_tenant
from tests.outbox.conftest import (
    SENDER,
    HttpSink,
    SmtpSink,
    finish,
    http_request,
    put_effect_agent,
    send_email,
)
from tests.outbox.test_dispatcher import post, queue


async def test_a_runs_effects_over_the_api_are_tenant_scoped(
    settings: Settings,
    database_url: str,
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    http_sink: HttpSink,
) -> None:
    run = await queue(services, acme, [post(http_sink, 0), post(http_sink, 1)])
    other = await queue(services, globex, [post(http_sink, 2)])
    dispatcher = services.dispatcher()
    try:
        assert await dispatcher.run_until_idle() == 3
    finally:
        await dispatcher.aclose()

    with live_server(create_app(settings, database_url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as client:
            mine = await client.get(f"/v1/runs/{run.id}/effects", headers=bearer(acme.secret))
            foreign = await client.get(f"/v1/runs/{other.id}/effects", headers=bearer(acme.secret))
            anonymous = await client.get(f"/v1/runs/{run.id}/effects")

    assert mine.status_code == 200, mine.text
    data = mine.json()["data"]
    assert [(e["step"], e["call_index"], e["kind"], e["status"]) for e in data] == [
        (1, 0, "http", "delivered"),
        (1, 1, "http", "delivered"),
    ]
    assert data[0]["idempotency_key"] == f"{run.id}:1:0"
    assert data[0]["payload"]["url"] == http_sink.url("/hook/0")
    assert data[0]["response"]["status"] == 200
    assert data[0]["next_attempt_at"] is None
    assert "locked_by" not in data[0]
    assert_error(foreign, 404, "not_found")
    assert_error(anonymous, 401, "unauthorized")


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, scripted_model: ScriptedModelServer, tmp_path: Path) -> Cli:
    return Cli(
        {
            "GARRISON_DATABASE_URL": database_url,
            "GARRISON_CHAT_URL": scripted_model.base_url,
            "GARRISON_EMBED_URL": scripted_model.base_url,
            "GARRISON_DATA_DIR": str(tmp_path / "data"),
        }
    )


def test_outbox_list_and_retry_from_the_cli(
    cli: Cli, settings: Settings, http_sink: HttpSink
) -> None:
    http_sink.answer(400)

    async def failed_and_delivered(services: Services) -> tuple[str, str]:
        fx = await make_tenant(services, "acme")
        failing = await queue(services, fx, [post(http_sink, 0)])
        dispatcher = services.dispatcher()
        try:
            await dispatcher.run_until_idle()
            ok = await queue(services, fx, [post(http_sink, 1)])
            await dispatcher.run_until_idle()
        finally:
            await dispatcher.aclose()
        return str(failing.id), str(ok.id)

    failing, ok = in_services(settings, failed_and_delivered)

    rows = cli.json("outbox", "list")["outbox"]
    assert [(r["run_id"], r["status"]) for r in rows] == [(ok, "delivered"), (failing, "failed")]
    [failed] = cli.json("outbox", "list", "--status", "failed")["outbox"]
    assert failed["last_error"] == "http_status: the receiver answered 400"
    assert failed["response"] == {"status": 400, "body": '{"status": 400}'}
    assert [r["run_id"] for r in cli.json("outbox", "list", "--run", ok)["outbox"]] == [ok]
    assert cli.json("outbox", "list", "--tenant", "acme", "--status", "pending")["outbox"] == []

    table = cli.ok("outbox", "list").stdout
    assert "LAST ERROR" in table
    assert f"POST {http_sink.url('/hook/0')}"[:30] in table

    done = cli.ok("outbox", "retry", str(failed["id"])).stdout
    assert f"outbox row {failed['id']} (http to POST" in done
    assert "pending again" in done
    [again] = cli.json("outbox", "list", "--run", failing)["outbox"]
    assert (again["status"], again["attempts"]) == ("pending", 0)

    cli.fails(1, "conflict", "outbox", "retry", str(failed["id"]))
    cli.fails(1, "not_found", "outbox", "retry", "999999")
    cli.fails(1, "not_found", "outbox", "list", "--tenant", "nobody")


# -- a real worker process ---------------------------------------------------------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str]) -> Proc:
        proc = Proc(list(args), env, tmp_path / f"proc{len(started)}")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def test_garrison_worker_delivers_what_its_runs_queue_and_stops_on_sigterm(
    spawn: Callable[..., Proc],
    settings: Settings,
    database_url: str,
    scripted_model: ScriptedModelServer,
    smtp_sink: SmtpSink,
    http_sink: HttpSink,
) -> None:
    async def submit(services: Services) -> str:
        fx = await make_tenant(services, "acme")
        await put_effect_agent(services, "acme")
        run = await services.runs.submit(fx.principal, "notifier", "tell ops and the tracker")
        return str(run.id)

    scripted_model.enqueue(send_email(["ops@example.org"], "Heads up", "Disk is full."))
    scripted_model.enqueue(http_request("POST", http_sink.url("/tickets"), body='{"n": 1}'))
    scripted_model.enqueue(finish())
    run_id = in_services(settings, submit)
    env = subprocess_env(
        GARRISON_DATABASE_URL=database_url,
        GARRISON_CHAT_URL=scripted_model.base_url,
        GARRISON_EMBED_URL=scripted_model.base_url,
        GARRISON_POLL_INTERVAL_S="0.05",
        GARRISON_SMTP_HOST="127.0.0.1",
        GARRISON_SMTP_PORT=str(smtp_sink.port),
        GARRISON_SMTP_FROM=SENDER,
        GARRISON_HTTP_ALLOW_HOSTS=f"intranet.invalid, {http_sink.host}",
        GARRISON_OUTBOX_POLL_INTERVAL_S="0.05",
    )
    worker = spawn("worker", "--json-logs", env=env)
    worker.wait_for(
        lambda: len(smtp_sink.messages) == 1 and len(http_sink.received) == 1,
        timeout=60,
        what="waiting for the email and the HTTP request",
    )
    assert smtp_sink.messages[0]["Subject"] == "Heads up"
    assert http_sink.received[0].headers["idempotency-key"] == f"{run_id}:2:0"
    assert worker.stop(signal.SIGTERM) == 0, worker.describe()
    assert "stopped" in worker.stdout
    assert "Traceback" not in worker.stderr, worker.stderr

    async def effects(services: Services) -> list[tuple[str, str]]:
        items = await services.outbox.list(None, run_id=uuid.UUID(run_id))
        return [(i.kind, i.status) for i in items]

    assert in_services(settings, effects) == [("email", "delivered"), ("http", "delivered")]
    time.sleep(0.2)  # nothing more arrives after the stop: each side effect landed once
    assert (len(smtp_sink.messages), len(http_sink.received)) == (1, 1)
