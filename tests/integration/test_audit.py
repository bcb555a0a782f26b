"""The audit log: every administrator's change lands in it in the change's own transaction, the
hash chain verifies, and editing, deleting or rewriting entries is found and named."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import psycopg
import pytest

from agent.domain import AuditEntry, OutboxEffect, Role, Run
from agent.errors import IllegalTransition, NotFound
from agent.runtime import Services
from agent.services.audit import Anchor, InvalidAnchor
from serving.testing.scripted import ScriptedModelServer
from tests.audit_tamper import delete_entry, edit_detail, entry_ids, rewrite_from
from tests.conftest import TenantFixture
from tests.outbox.test_dispatcher import queue

ADMIN = "cli:root"


async def entries(services: Services) -> list[AuditEntry]:
    return list(reversed(await services.store.audit.list_entries(None, 10_000)))


async def finished_run(services: Services, fx: TenantFixture, model: ScriptedModelServer) -> Run:
    model.enqueue({"tool": "finish", "arguments": {"answer": "done"}})
    run = await services.runs.submit(fx.principal, "assistant", "hello")
    assert await services.worker().run_until_idle() == 1
    return await services.runs.get(run.id, None)


def park(url: str, run_id: uuid.UUID) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE runs SET status = 'parked' WHERE id = %s", (run_id,))


def fail_outbox(url: str, item_id: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE outbox SET status = 'failed' WHERE id = %s", (item_id,))


async def test_every_administrators_change_is_linked(
    services: Services,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
    database_url: str,
) -> None:
    start = len(await entries(services))
    tenant = await services.tenancy.create_tenant("initech", actor=ADMIN)
    agent = await services.tenancy.put_agent("initech", "helper", instructions="Help.", actor=ADMIN)
    key, _secret = await services.keys.create("initech", "ops", [Role.OPERATOR], actor=ADMIN)
    await services.keys.revoke(key.id, actor=ADMIN)
    # First, while it is the only queued run: `queue` claims the next one.
    effectful = await queue(
        services, acme, [OutboxEffect("email", {"to": ["a@example.org"], "subject": "s"})]
    )
    parent = await finished_run(services, acme, scripted_model)
    fork = await services.forks.fork(parent.id, None, from_step=1, actor=ADMIN)
    queued = await services.runs.submit(acme.principal, "assistant", "later")
    cancelled = await services.runs.cancel(queued.id, None, actor=ADMIN)
    parked = await services.runs.submit(acme.principal, "assistant", "stuck")
    park(database_url, parked.id)
    await services.runs.resume(parked.id, None, actor=ADMIN)
    [item] = await services.store.outbox.list_items(tenant_id=None, run_id=effectful.id)
    fail_outbox(database_url, item.id)
    await services.outbox.retry(item.id, None, actor=ADMIN)

    made = (await entries(services))[start:]
    assert [(e.action, e.object_type, e.object_id, e.tenant_id, e.actor) for e in made] == [
        ("tenant.create", "tenant", str(tenant.id), tenant.id, ADMIN),
        ("agent.put", "agent", str(agent.id), tenant.id, ADMIN),
        ("key.create", "api_key", str(key.id), tenant.id, ADMIN),
        ("key.revoke", "api_key", str(key.id), tenant.id, ADMIN),
        ("run.fork", "run", str(fork.id), acme.tenant.id, ADMIN),
        ("run.cancel", "run", str(cancelled.id), acme.tenant.id, ADMIN),
        ("run.resume", "run", str(parked.id), acme.tenant.id, ADMIN),
        ("outbox.retry", "outbox", str(item.id), acme.tenant.id, ADMIN),
    ]
    details = {e.action: e.detail for e in made}
    assert details["key.create"] == {
        "name": "ops",
        "roles": ["operator"],
        "prefix": key.prefix,
        "access_tags": None,
    }
    assert details["agent.put"]["version"] == 1
    assert details["run.fork"] == {"parent": str(parent.id), "from_step": 1, "deployment": None}
    assert details["run.cancel"] == {"from": "queued", "deferred": False, "to": "cancelled"}
    assert details["run.resume"] == {"from": "parked", "to": "queued"}
    assert (await services.audit.verify()).ok


async def test_a_change_that_does_not_happen_leaves_no_entry(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    run = await finished_run(services, acme, scripted_model)
    start = len(await entries(services))
    with pytest.raises(IllegalTransition):
        await services.runs.cancel(run.id, None, actor=ADMIN)  # it already ended
    with pytest.raises(IllegalTransition):
        await services.runs.resume(run.id, None, actor=ADMIN)
    with pytest.raises(NotFound):
        await services.keys.revoke(uuid.uuid4(), actor=ADMIN)
    with pytest.raises(NotFound):
        await services.runs.cancel(run.id, uuid.uuid4(), actor=ADMIN)  # another tenant's view
    # Repeating a change that already happened changes nothing, so records nothing.
    await services.keys.revoke(acme.principal.key_id, actor=ADMIN)
    await services.keys.revoke(acme.principal.key_id, actor=ADMIN)
    await services.tenancy.create_tenant("acme", actor=ADMIN)
    assert [e.action for e in (await entries(services))[start:]] == ["key.revoke"]


async def test_the_chain_verifies_across_pages_and_concurrent_appends(
    services: Services, acme: TenantFixture
) -> None:
    # Forty changes racing each other still make one chain: appends take turns.
    await asyncio.gather(
        *(
            services.keys.create("acme", f"k{i}", [Role.CLIENT], actor=f"cli:user{i}")
            for i in range(40)
        )
    )
    all_entries = await entries(services)
    assert len(all_entries) == 3 + 40  # the fixture's tenant, agent and key, then these
    seen: list[int] = []
    report = await services.store.audit.verify(progress=seen.append, batch=7)
    assert report.ok
    assert (report.checked, report.head_id, report.head_hash) == (
        43,
        all_entries[-1].id,
        all_entries[-1].hash,
    )
    assert seen == [7, 14, 21, 28, 35, 42, 43]
    anchor = Anchor(all_entries[20].id, all_entries[20].hash)
    assert (await services.audit.verify(anchor)).ok


async def test_an_edited_entry_is_named(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    for i in range(4):
        await services.keys.create("acme", f"k{i}", [Role.CLIENT], actor=ADMIN)
    ids = entry_ids(database_url)
    victim = ids[3]
    edit_detail(database_url, victim, {"name": "k0", "roles": ["admin"], "prefix": "gk_x"})

    report = await services.audit.verify()
    assert report.broken is not None
    assert (report.broken.entry_id, report.broken.code) == (victim, "audit_entry_altered")
    assert f"audit entry {victim} (key.create by {ADMIN})" in report.broken.message
    # The report stops at the break: everything before it is intact.
    assert (report.checked, report.head_id) == (4, ids[2])


async def test_a_deleted_entry_is_found_at_the_next_one(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    for i in range(4):
        await services.keys.create("acme", f"k{i}", [Role.CLIENT], actor=ADMIN)
    ids = entry_ids(database_url)
    delete_entry(database_url, ids[3])

    report = await services.audit.verify()
    assert report.broken is not None
    assert (report.broken.entry_id, report.broken.code) == (ids[4], "audit_chain_broken")
    assert f"does not follow entry {ids[2]}" in report.broken.message


async def test_a_deleted_first_entry_is_found(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    ids = entry_ids(database_url)
    delete_entry(database_url, ids[0])
    report = await services.audit.verify()
    assert report.broken is not None
    assert (report.broken.entry_id, report.broken.code) == (ids[1], "audit_chain_broken")
    assert "does not follow the start of the log" in report.broken.message


async def test_an_anchor_catches_a_rewrite_and_a_truncation(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    for i in range(4):
        await services.keys.create("acme", f"k{i}", [Role.CLIENT], actor=ADMIN)
    noted = await services.audit.verify()
    assert noted.head_id is not None
    assert noted.head_hash is not None
    anchor = Anchor.parse(f"{noted.head_id}:{noted.head_hash}")

    # Rewritten with fresh hashes from entry 2 on: the chain alone holds again.
    rewrite_from(database_url, entry_ids(database_url)[1], "cli:mallory")
    assert (await services.audit.verify()).ok
    report = await services.audit.verify(anchor)
    assert report.broken is not None
    assert (report.broken.entry_id, report.broken.code) == (
        anchor.entry_id,
        "audit_anchor_mismatch",
    )
    assert "carries another hash now" in report.broken.message

    # Cut short: the anchored entry is gone.
    delete_entry(database_url, anchor.entry_id)
    assert (await services.audit.verify()).ok
    report = await services.audit.verify(anchor)
    assert report.broken is not None
    assert report.broken.code == "audit_anchor_mismatch"
    assert "is gone" in report.broken.message


def test_an_anchor_must_name_an_id_and_a_hash() -> None:
    assert Anchor.parse(f" 12:{'AB' * 32} ") == Anchor(12, "ab" * 32)
    for bad in ("12", "x:" + "a" * 64, "12:" + "a" * 63, "12:" + "g" * 64, ""):
        with pytest.raises(InvalidAnchor):
            Anchor.parse(bad)


async def test_a_time_zone_does_not_change_a_hash(
    services: Services, acme: TenantFixture, database_url: str
) -> None:
    # Hashes cover the UTC rendering of each timestamp: a session in another zone reads the
    # same instants and must verify the same chain.
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(f"ALTER DATABASE \"{name[0]}\" SET timezone TO 'Asia/Kolkata'")
    await services.store.engine.dispose()  # new connections pick the zone up
    await services.keys.create("acme", "later", [Role.CLIENT], actor=ADMIN)
    [entry] = [e for e in await entries(services) if e.detail.get("name") == "later"]
    assert entry.created_at is not None
    assert entry.created_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert (await services.audit.verify()).ok
