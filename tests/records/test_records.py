"""State records through their contract: typed data, versions remembered from the run's own steps,
stale reads detected and re-fetched, writes over a version the run did not see refused."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import psycopg

from agent.domain import JSON, RunStatus, Step
from agent.runtime import Services
from agent.tools.record_types import RECORD_TYPES, RecordTypeName
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture

PREFS = "customer:1042:preferences"
EMAIL_EN = {"contact_channel": "email", "language": "en"}


def read(key: str = PREFS) -> JSON:
    return {"tool": "read_record", "arguments": {"key": key}}


def write(data: JSON, key: str = PREFS, type: str = "customer_preferences", **more: Any) -> JSON:
    return {"tool": "write_record", "arguments": {"key": key, "type": type, "data": data, **more}}


FINISH = {"tool": "finish", "arguments": {"answer": "done"}}


async def run_script(
    services: Services,
    fx: TenantFixture,
    scripted_model: ScriptedModelServer,
    answers: list[JSON],
    before: dict[int, Callable[[], None]] | None = None,
) -> list[Step]:
    """Drive a run whose model answers `answers` in order; `before[i]` runs just before the
    model is asked for answer i (after step i has committed): another writer, a clock."""
    hooks = before or {}
    asked = iter(range(len(answers)))

    def respond(_request: dict[str, Any]) -> str:
        i = next(asked)
        hooks.get(i, lambda: None)()
        return json.dumps(answers[i])

    scripted_model.set_responder(respond)
    await services.tenancy.put_agent(
        fx.tenant.name,
        "keeper",
        instructions="Keep customer records up to date.",
        tools=["read_record", "write_record", "finish"],
        retrieval_k=0,
        max_steps=len(answers),
        actor="test",
    )
    run = await services.runs.submit(fx.principal, "keeper", "update the preferences")
    assert await services.worker().run_until_idle() == 1
    done = await services.runs.get(run.id, fx.tenant.id)
    assert done.status == RunStatus.SUCCEEDED, done
    return await services.runs.steps(run.id, fx.tenant.id)


def results(steps: list[Step]) -> list[JSON]:
    return [s.result or {} for s in steps]


def other_writer(
    url: str, tenant_id: uuid.UUID, data: JSON, key: str = PREFS
) -> Callable[[], None]:
    """Someone else (the customer, a CRM sync) updates the record between two steps."""

    def update() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE state_records SET data = %s::jsonb, version = version + 1, "
                "updated_at = now() WHERE tenant_id = %s AND key = %s",
                (json.dumps(data), tenant_id, key),
            )

    return update


async def test_the_preferences_changed_twenty_minutes_ago_bug_cannot_happen(
    services: Services, database_url: str, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    phone = {"contact_channel": "phone", "language": "de"}
    steps = await run_script(
        services,
        acme,
        scripted_model,
        [
            write(EMAIL_EN),  # 1: create (nothing to have read: the key was free)
            read(),  # 2: the run reads version 1
            write({**EMAIL_EN, "newsletter": True}),  # 3: the customer changed it meanwhile
            read(),  # 4: re-read: it says what changed
            write({**phone, "newsletter": True}),  # 5: now based on version 2
            FINISH,
        ],
        before={2: other_writer(database_url, acme.tenant.id, phone)},
    )
    created, first, refused, reread, written, _ = results(steps)
    assert (created["written"], created["version"], created["previous_version"]) == (True, 1, 0)
    assert created["owner"] == f"run:{steps[0].run_id}"
    assert (first["version"], first["freshness"], first["data"]["newsletter"]) == (
        1,
        "unchanged",
        False,
    )
    assert refused["error"]["code"] == "stale_version"
    assert (refused["expected_version"], refused["current_version"]) == (1, 2)
    assert "version" not in refused  # a refusal is not a read
    assert reread["freshness"] == "changed_since_last_read"
    assert (reread["previous_version"], reread["version"]) == (1, 2)
    assert reread["data"]["contact_channel"] == "phone"
    assert (written["version"], written["previous_version"]) == (3, 2)
    stored = await services.store.records.get(acme.tenant.id, PREFS)
    assert stored is not None
    assert stored.data == {
        "contact_channel": "phone",
        "language": "de",
        "newsletter": True,
        "notes": "",
    }


async def test_a_write_without_reading_an_existing_record_is_refused(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await services.store.records.write(
        acme.tenant.id,
        PREFS,
        type="customer_preferences",
        owner="crm",
        data=EMAIL_EN,
        valid_until=None,
        expected_version=0,
    )
    steps = await run_script(services, acme, scripted_model, [write(EMAIL_EN), read(), FINISH])
    refused, first, _ = results(steps)
    assert refused["error"]["code"] == "stale_version"
    assert "read it before writing" in refused["error"]["message"]
    assert (first["freshness"], first["owner"], first["version"]) == ("first_read", "crm", 1)


async def test_an_expired_copy_is_re_fetched_and_an_expired_record_says_so(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=20)
    await services.store.records.write(
        acme.tenant.id,
        PREFS,
        type="customer_preferences",
        owner="crm",
        data=EMAIL_EN,
        valid_until=past,
        expected_version=0,
    )
    steps = await run_script(
        services,
        acme,
        scripted_model,
        [read(), read(), write(EMAIL_EN, valid_for_hours=2), read(), FINISH],
    )
    first, again, renewed, fresh, _ = results(steps)
    assert (first["expired"], first["freshness"]) == (True, "first_read")
    assert "out of date" in first["note"]
    assert (again["freshness"], again["previous_version"]) == ("expired_since_last_read", 1)
    valid_until = datetime.fromisoformat(renewed["valid_until"])
    assert timedelta(hours=1.9) < valid_until - datetime.now(UTC) < timedelta(hours=2)
    assert (fresh["freshness"], fresh["expired"], fresh["version"]) == ("unchanged", False, 2)


async def test_data_must_match_its_type_and_a_type_cannot_change(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    steps = await run_script(
        services,
        acme,
        scripted_model,
        [
            write({"contact_channel": "pigeon", "language": "en"}),
            write({**EMAIL_EN, "shoe_size": 44}),
            write(EMAIL_EN),
            write({"status": "open"}, type="case_status"),
            FINISH,
        ],
    )
    bad_value, unknown_field, created, other_type, _ = results(steps)
    assert bad_value["error"]["code"] == "record_invalid"
    assert "contact_channel" in bad_value["error"]["message"]
    assert unknown_field["error"]["code"] == "record_invalid"
    assert "shoe_size" in unknown_field["error"]["message"]
    assert created["version"] == 1
    assert other_type["error"]["code"] == "record_type_mismatch"


async def test_records_are_tenant_scoped_and_runs_remember_only_their_own_reads(
    services: Services,
    acme: TenantFixture,
    globex: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    await services.store.records.write(
        acme.tenant.id,
        PREFS,
        type="customer_preferences",
        owner="crm",
        data=EMAIL_EN,
        valid_until=None,
        expected_version=0,
    )
    first_run = await run_script(services, acme, scripted_model, [read(), FINISH])
    assert first_run[0].result is not None
    assert first_run[0].result["version"] == 1
    # Another run of the same tenant has read nothing yet: its write is refused.
    second_run = await run_script(services, acme, scripted_model, [write(EMAIL_EN), FINISH])
    assert second_run[0].result is not None
    assert second_run[0].result["error"]["code"] == "stale_version"
    # Another tenant's run sees no such record and creates its own under the same key.
    theirs = await run_script(services, globex, scripted_model, [read(), write(EMAIL_EN), FINISH])
    missing, created, _ = results(theirs)
    assert (missing["found"], missing["freshness"], missing["version"]) == (False, "missing", 0)
    assert (created["written"], created["version"]) == (True, 1)
    mine = await services.store.records.get(acme.tenant.id, PREFS)
    assert mine is not None
    assert (mine.owner, mine.version) == ("crm", 1)


def test_the_type_names_in_the_schema_are_the_registry() -> None:
    assert set(get_args(RecordTypeName)) == set(RECORD_TYPES)
