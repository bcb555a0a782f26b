from __future__ import annotations

from agent.runtime import Services
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture


async def test_run_to_completion(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    doc, created = await services.documents.ingest(
        acme.tenant.id, title="Leave policy", text="Employees get 30 days of annual leave."
    )
    assert created
    assert doc.chunk_count == 1
    scripted_model.enqueue({"tool": "search_documents", "arguments": {"query": "annual leave"}})
    scripted_model.enqueue({"tool": "finish", "arguments": {"answer": "30 days"}})
    run = await services.runs.submit(acme.principal, "assistant", "How much leave do I get?")
    worker = services.worker()
    assert await worker.run_until_idle() == 1
    final = await services.runs.get(run.id, acme.tenant.id)
    assert final.status == "succeeded", final
    assert final.output == "30 days"
    steps = await services.runs.steps(run.id, acme.tenant.id)
    assert [s.tool for s in steps] == ["search_documents", "finish"]
    assert steps[0].result is not None
    assert steps[0].result["hits"][0]["title"] == "Leave policy"
