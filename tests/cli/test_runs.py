"""`garrison runs list|show`: the operator's view of what runs did."""

from __future__ import annotations

import uuid

from agent.domain import RunStatus
from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.cli.conftest import Cli, in_services, tenant
from tests.conftest import TenantFixture

LONG_ANSWER = "Thirty days. " * 60  # longer than a human line shows


def drive(settings: Settings, who: TenantFixture, task: str) -> uuid.UUID:
    async def work(services: Services) -> uuid.UUID:
        await services.documents.ingest(
            who.tenant.id, title="Leave policy", text="Employees get 30 days of annual leave."
        )
        run = await services.runs.submit(who.principal, "assistant", task)
        await services.worker().run_until_idle()
        return run.id

    return in_services(settings, work)


def test_show_a_run_step_by_step(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    acme = tenant(settings)
    scripted_model.enqueue("not json at all")
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": LONG_ANSWER}})
    run_id = drive(settings, acme, "How much leave do I get?")

    human = cli.ok("runs", "show", str(run_id)).stdout
    assert f"run {run_id}: agent assistant, succeeded" in human
    assert "input:    How much leave do I get?" in human
    assert "more chars)" in human
    assert LONG_ANSWER.strip() not in human
    assert "step 1: completed" in human
    assert "step 2: completed" in human
    assert "1 passage(s) retrieved" in human
    assert "] Leave policy" in human  # the passage, by title and score
    assert "attempt 1: not json at all" in human
    assert "-> invalid: the answer is not JSON" in human
    lines = [line.split(None, 1) for line in human.splitlines() if line.strip()]
    actions = [rest for label, rest in lines if label == "action:"]
    assert actions[0].startswith("search_documents {")
    assert '"query": "annual leave"' in actions[0]
    assert actions[1].startswith('finish {"answer": "Thirty days.')
    results = [rest for label, rest in lines if label == "result:"]
    assert '"title": "Leave policy"' in results[0]
    assert results[1].endswith("more chars)")

    shown = cli.json("runs", "show", str(run_id))
    run, steps = shown["run"], shown["steps"]
    assert run["status"] == "succeeded"
    assert run["output"] == LONG_ANSWER
    assert run["prompt_tokens"] > 0
    assert run["completion_tokens"] > 0
    assert [s["tool"] for s in steps] == ["search_documents", "finish"]
    first = steps[0]
    assert len(first["decision"]["attempts"]) == 2
    assert first["decision"]["attempts"][0]["error"].startswith("the answer is not JSON")
    assert first["context"]["passages"][0]["title"] == "Leave policy"
    assert first["result"]["hits"][0]["title"] == "Leave policy"
    assert first["model_ms"] > 0
    assert "tool_ms" in first
    assert steps[1]["result"] == {"answer": LONG_ANSWER}


def test_show_a_failed_run(
    cli: Cli, settings: Settings, scripted_model: ScriptedModelServer
) -> None:
    acme = tenant(settings)
    scripted_model.enqueue_error(503, "engine overloaded")
    run_id = drive(settings, acme, "Anything?")
    human = cli.ok("runs", "show", str(run_id)).stdout
    assert "agent assistant, failed" in human
    assert "failure:  model_unavailable" in human or "failure:  model_http_error" in human
    assert "error:" in human
    shown = cli.json("runs", "show", str(run_id))
    assert shown["run"]["failure_code"] == shown["steps"][-1]["error_code"]
    assert shown["run"]["failure_detail"]


def test_show_unknown_and_malformed(cli: Cli) -> None:
    result = cli.fails(1, "not_found", "runs", "show", str(uuid.uuid4()))
    assert "not found" in result.stderr
    malformed = cli("runs", "show", "12")
    assert malformed.exit_code == 2
    assert "error[usage]: " in malformed.stderr


def test_list_filters(cli: Cli, settings: Settings, scripted_model: ScriptedModelServer) -> None:
    assert cli.ok("runs", "list").stdout == "no runs\n"
    acme, globex = tenant(settings, "acme"), tenant(settings, "globex")
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "yes"}})
    done = drive(settings, acme, "First question")
    scripted_model.enqueue_error(400, "bad request")
    failed = drive(settings, globex, "Second question")

    rows = cli.ok("runs", "list").stdout.splitlines()
    assert rows[0].split()[:4] == ["ID", "TENANT", "AGENT", "STATUS"]
    assert {r.split()[0] for r in rows[1:]} == {str(done), str(failed)}
    assert any("globex" in r and "failed" in r and "model_http_error" in r for r in rows)

    listed = cli.json("runs", "list")["runs"]
    assert [r["id"] for r in listed] == [str(failed), str(done)]  # newest first
    only_acme = cli.json("runs", "list", "--tenant", "acme")["runs"]
    assert [(r["id"], r["tenant"]) for r in only_acme] == [(str(done), "acme")]
    only_failed = cli.json("runs", "list", "--status", RunStatus.FAILED)["runs"]
    assert [r["id"] for r in only_failed] == [str(failed)]
    assert len(cli.json("runs", "list", "--limit", "1")["runs"]) == 1
    cli.fails(1, "not_found", "runs", "list", "--tenant", "nobody")
    bad_status = cli("runs", "list", "--status", "exploded")
    assert bad_status.exit_code == 2
    assert "error[usage]: " in bad_status.stderr
