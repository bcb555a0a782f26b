"""Access tags on API keys, against the real Postgres: what a restricted key can find, read,
delete and store, what the runs it submits retrieve, and migration 0011 both ways."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from agent.domain import Principal, Role, RunStatus, SearchFilter, SearchQuery
from agent.errors import CallerError, NotFound
from agent.runtime import Services
from agent.services.access import AccessTagRequired
from agent.services.document_input import DocumentInput
from agent.services.ingest import PendingDocument
from agent.services.search import SearchMode
from datastore import migrate
from datastore.errors import MigrationError
from datastore.repos.search import SearchRepository
from datastore.repos.search_plan import PlannerCosts
from serving.testing.scripted import ScriptedModelServer, deterministic_embedding
from tests.conftest import PgCluster, TenantFixture, create_database, drop_database
from tests.integration.test_search import K, plant_corpus, unit_vector

QUERY = "falcon launch code rotation note exactly"
TWINS = 12
INDEX_FIRST = PlannerCosts(ef_search=1, max_scan_tuples=10**9, visit_cost=1e-9)
"""Costs under which the HNSW index wins even over a dozen rows: the index path, tested small."""
EXACT_ONLY = PlannerCosts(ef_search=10**6, max_scan_tuples=10**9)
"""Costs under which an exact scan always wins: the ground truth, by the same statement."""


async def restricted(
    services: Services, tags: Sequence[str], roles: Sequence[Role] = (Role.OPERATOR,)
) -> Principal:
    _key, secret = await services.keys.create(
        "acme", f"key-{'-'.join(tags)}", roles, actor="test", access_tags=tags
    )
    return await services.keys.authenticate(secret)


async def plant_twins(services: Services, tenant_id: uuid.UUID) -> None:
    """Per note: a `Visible` document tagged `hr`, and two near-duplicates that say "exactly" as
    QUERY does and carry an identifier: `Hidden` tagged `eng`, `Untagged` with no tag. The
    twins rank above the visible notes for QUERY."""
    for i in range(TWINS):
        note = f"Falcon launch code rotation note {i}."
        for title, text, tags in (
            (f"Visible {i}", f"{note} Filed by the archive team, see the binder.", ("hr",)),
            (f"Hidden {i}", f"{note} Exactly XK-4471-{i}.", ("eng",)),
            (f"Untagged {i}", f"{note} Exactly XK-4471-{i} copy.", ()),
        ):
            await services.documents.ingest(tenant_id, title=title, text=text, tags=tags)


def kinds(titles: Sequence[str]) -> set[str]:
    return {t.split()[0] for t in titles}


async def test_key_access_tags_are_normalised_audited_and_authenticated(
    services: Services, acme: TenantFixture
) -> None:
    key, secret = await services.keys.create(
        "acme", "hr desk", [Role.CLIENT], actor="test", access_tags=[" legal", "hr", "hr"]
    )
    assert key.access_tags == ("hr", "legal")
    principal = await services.keys.authenticate(secret)
    assert principal.access_tags == ("hr", "legal")
    assert acme.principal.access_tags is None  # a key made without tags: the whole tenant
    listed = {k.name: k.access_tags for k in await services.keys.list("acme")}
    assert listed == {"test key": None, "hr desk": ("hr", "legal")}
    entries = await services.store.audit.list_entries(acme.tenant.id, 10)
    created = next(e for e in entries if e.action == "key.create" and e.object_id == str(key.id))
    assert created.detail["access_tags"] == ["hr", "legal"]

    with pytest.raises(CallerError, match="at least one access tag"):
        await services.keys.create("acme", "none", [Role.CLIENT], actor="t", access_tags=[])
    with pytest.raises(CallerError, match="1-64 characters"):
        await services.keys.create("acme", "long", [Role.CLIENT], actor="t", access_tags=["x" * 65])


async def test_a_key_with_access_tags_cannot_be_an_admin(
    services: Services, acme: TenantFixture
) -> None:
    for roles in ([Role.ADMIN], [Role.CLIENT, Role.ADMIN]):
        with pytest.raises(CallerError, match="cannot hold the admin role") as refused:
            await services.keys.create("acme", "gov", roles, actor="t", access_tags=["hr"])
        assert refused.value.code == "invalid_request"
    assert {k.name for k in await services.keys.list("acme")} == {"test key"}  # none stored
    # Every other role may be restricted, and an admin key may see the whole tenant.
    others = [Role.OPERATOR, Role.CLIENT, Role.APPROVER]
    scoped, _ = await services.keys.create("acme", "ops", others, actor="t", access_tags=["hr"])
    assert scoped.access_tags == ("hr",)
    wide, _ = await services.keys.create("acme", "gov", [Role.ADMIN], actor="t")
    assert wide.access_tags is None


async def test_a_restricted_key_mints_only_keys_within_its_tags(
    services: Services, acme: TenantFixture
) -> None:
    minter = ("hr", "legal")
    for refused in (None, ["hr", "eng"], ["eng"]):
        with pytest.raises(AccessTagRequired, match="hr, legal"):
            await services.keys.create(
                "acme",
                "k",
                [Role.CLIENT],
                actor="t",
                access_tags=refused,
                creator_access_tags=minter,
            )
    narrower, _ = await services.keys.create(
        "acme", "k", [Role.CLIENT], actor="t", access_tags=["legal"], creator_access_tags=minter
    )
    assert narrower.access_tags == ("legal",)


async def test_search_sees_only_the_keys_documents_in_every_mode(
    services: Services, acme: TenantFixture
) -> None:
    await plant_twins(services, acme.tenant.id)
    hr = await restricted(services, ["hr"])
    everyone = await services.documents.search(acme.tenant.id, QUERY, k=K, mode=SearchMode.VECTOR)
    # The control: without a scope, the twins come first.
    assert kinds([h.title for h in everyone.result.hits[:4]]) == {"Hidden", "Untagged"}

    for mode in (SearchMode.VECTOR, SearchMode.HYBRID):
        found = await services.documents.search(
            acme.tenant.id, QUERY, k=K, mode=mode, access_tags=hr.access_tags
        )
        assert len(found.result.hits) == K  # exactly k: the scope is in the SQL
        assert kinds([h.title for h in found.result.hits]) == {"Visible"}
        assert found.result.plan.estimated_rows == TWINS  # and in the count the plan is chosen by

    # The keyword half: the identifier is only in documents the key cannot see.
    by_code = await services.documents.search(
        acme.tenant.id, "XK-4471-3", k=K, access_tags=hr.access_tags
    )
    assert kinds([h.title for h in by_code.result.hits]) == {"Visible"}
    assert all("keyword" not in h.matched_by for h in by_code.result.hits)
    unrestricted = await services.documents.search(acme.tenant.id, "XK-4471-3", k=K)
    assert unrestricted.result.hits[0].title in {"Hidden 3", "Untagged 3"}
    assert "keyword" in unrestricted.result.hits[0].matched_by

    # Exactly k when exactly k are visible, also when the scope is narrower than k.
    exact = await services.documents.search(
        acme.tenant.id, QUERY, k=TWINS, access_tags=hr.access_tags
    )
    assert sorted(h.title for h in exact.result.hits) == sorted(f"Visible {i}" for i in range(12))
    over = await services.documents.search(acme.tenant.id, QUERY, k=20, access_tags=("hr",))
    assert len(over.result.hits) == TWINS


async def test_the_index_path_returns_k_inside_the_scope(
    services: Services, acme: TenantFixture
) -> None:
    await plant_twins(services, acme.tenant.id)
    by_index = SearchRepository(services.store.search_pool, INDEX_FIRST)
    query = SearchQuery(
        acme.tenant.id,
        deterministic_embedding(QUERY),
        K,
        filter=SearchFilter(access_tags=("hr",)),
    )
    result = await by_index.search(query)
    assert result.plan.strategy == ("exact" if result.plan.fell_back else "hnsw")
    assert len(result.hits) == K
    assert kinds([h.title for h in result.hits]) == {"Visible"}
    nothing = await by_index.search(
        SearchQuery(acme.tenant.id, query.embedding, K, filter=SearchFilter(access_tags=()))
    )
    assert nothing.hits == []  # an empty scope is nothing, never the whole tenant


def exact_top_tagged(url: str, tenant_id: uuid.UUID, q: list[float], tag: str) -> list[int]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        rows = conn.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.tenant_id = %s AND d.tags && ARRAY[%s]::text[] "
            "ORDER BY c.embedding <=> %s LIMIT %s",
            (tenant_id, tag, HalfVector(q), K),
        ).fetchall()
    return [r[0] for r in rows]


async def test_a_key_scope_at_scale_is_exact_and_anded_with_the_callers_filters(
    services: Services, acme: TenantFixture, globex: TenantFixture, database_url: str
) -> None:
    await plant_corpus(services, acme.tenant.id)  # half `even`, half `odd`
    await plant_corpus(services, globex.tenant.id, seed=2)
    q = unit_vector(random.Random(11))
    scoped = SearchFilter(access_tags=("even",))
    exact = await SearchRepository(services.store.search_pool, EXACT_ONLY).search(
        SearchQuery(acme.tenant.id, q, K, filter=scoped)
    )
    assert exact.plan.strategy == "exact"
    assert [h.chunk_id for h in exact.hits] == exact_top_tagged(
        database_url, acme.tenant.id, q, "even"
    )
    # As the planner chooses (the index, at a quarter of the table), and the index forced: the
    # scope counts as the caller's own `any_tags` would, in the plan's estimate and in the rows.
    for repo in (
        services.store.documents,
        SearchRepository(services.store.search_pool, INDEX_FIRST),
    ):
        result = await repo.search(SearchQuery(acme.tenant.id, q, K, filter=scoped))
        assert result.plan.estimated_rows == 2500
        assert len(result.hits) == K
        assert all(int(h.title.split()[1]) % 2 == 0 for h in result.hits)  # all `even`
        same = await repo.search(
            SearchQuery(acme.tenant.id, q, K, filter=SearchFilter(any_tags=("even",)))
        )
        assert (result.plan, result.hits) == (same.plan, same.hits)
    # The caller's own `any_tags` and the key's scope must both hold (AND): a caller asking
    # for `odd` documents under an `even` key finds none, rather than either set.
    both = SearchFilter(any_tags=("odd",), access_tags=("even",))
    none = await services.store.documents.search(SearchQuery(acme.tenant.id, q, K, filter=both))
    assert none.hits == []


async def test_reads_and_deletes_treat_other_documents_as_missing(
    services: Services, acme: TenantFixture
) -> None:
    docs = services.documents
    tagged, _ = await docs.ingest(acme.tenant.id, title="Pay", text="Pay day.", tags=("hr", "x"))
    other, _ = await docs.ingest(acme.tenant.id, title="Build", text="CI runs.", tags=("eng",))
    bare, _ = await docs.ingest(acme.tenant.id, title="Lunch", text="At noon.")
    scope = (await restricted(services, ["hr", "legal"])).access_tags

    assert [d.title for d in await docs.list(acme.tenant.id, access_tags=scope)] == ["Pay"]
    assert {d.title for d in await docs.list(acme.tenant.id)} == {"Pay", "Build", "Lunch"}
    assert (await docs.get(tagged.id, acme.tenant.id, access_tags=scope)).title == "Pay"
    assert await docs.chunks(tagged.id, acme.tenant.id, access_tags=scope)
    for hidden in (other, bare):
        with pytest.raises(NotFound):
            await docs.get(hidden.id, acme.tenant.id, access_tags=scope)
        with pytest.raises(NotFound):
            await docs.chunks(hidden.id, acme.tenant.id, access_tags=scope)
        with pytest.raises(NotFound):
            await docs.delete(hidden.id, acme.tenant.id, access_tags=scope)
        assert (await docs.get(hidden.id, acme.tenant.id)).id == hidden.id  # still there
    # The repository applies the scope in its own statement, whatever the service checked.
    assert await services.store.documents.list_chunks(bare.id, acme.tenant.id, 10, scope) == []
    assert (await docs.delete(tagged.id, acme.tenant.id, access_tags=scope)).id == tagged.id
    assert await docs.list(acme.tenant.id, access_tags=scope) == []


async def test_a_restricted_key_stores_only_documents_it_could_see(
    services: Services, acme: TenantFixture
) -> None:
    docs = services.documents
    scope = (await restricted(services, ["hr"])).access_tags
    held, _ = await docs.ingest(
        acme.tenant.id, title="Build", text="CI runs nightly.", key="ops/ci", tags=("eng",)
    )
    for tags in ((), ("eng",)):
        with pytest.raises(AccessTagRequired, match="access tags: hr"):
            await docs.ingest(acme.tenant.id, title="T", text="Text.", tags=tags, access_tags=scope)
    # Replacing a document the key cannot see is refused, even with its own tag on the new one.
    with pytest.raises(AccessTagRequired, match="'ops/ci'"):
        await docs.ingest(
            acme.tenant.id, title="Mine", text="Mine now.", key="ops/ci", tags=("hr",),
            access_tags=scope,
        )  # fmt: skip
    assert (await docs.get(held.id, acme.tenant.id)).version == 1
    stored, created = await docs.ingest(
        acme.tenant.id, title="Pay", text="Pay day.", tags=("hr", "eng"), access_tags=scope
    )
    assert (created, stored.tags) == (True, ("eng", "hr"))

    items = [
        DocumentInput(text="Untagged."),
        DocumentInput(text="Tagged.", tags=("hr",)),
        DocumentInput(text="Not yours.", key="ops/ci", tags=("hr",)),
    ]
    outcomes = await docs.ingest_many(
        acme.tenant.id,
        [PendingDocument(f"doc{i}", lambda d=d: d) for i, d in enumerate(items)],  # type: ignore[misc]
        access_tags=scope,
    )
    assert [(o.status, o.code) for o in outcomes] == [
        ("failed", "access_tag_required"),
        ("created", None),
        ("failed", "access_tag_required"),
    ]
    assert outcomes[2].document is None  # the hidden document is not reported back
    # An invalid document is still an invalid document, with no access code.
    with pytest.raises(CallerError) as invalid:
        await docs.ingest(acme.tenant.id, title="E", text="   ", tags=("hr",), access_tags=scope)
    assert invalid.value.code == "invalid_request"


def search(query: str) -> dict[str, object]:
    return {"tool": "search_documents", "arguments": {"query": query, "k": 5}}


def finish() -> dict[str, object]:
    return {"tool": "finish", "arguments": {"answer": "done"}}


async def test_a_run_retrieves_only_within_its_keys_tags(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    await plant_twins(services, acme.tenant.id)
    hr = await restricted(services, ["hr"], roles=(Role.CLIENT,))
    scripted_model.enqueue(search(QUERY))
    scripted_model.enqueue(finish())
    run = await services.runs.submit(hr, "assistant", QUERY)
    assert run.access_tags == ("hr",)  # snapshotted at submission
    assert await services.worker().run_until_idle() == 1
    final = await services.runs.get(run.id, acme.tenant.id)
    assert final.status is RunStatus.SUCCEEDED
    first = (await services.runs.steps(run.id, acme.tenant.id))[0]
    passages = [p["title"] for p in first.context["passages"]]
    assert len(passages) == acme.agent.retrieval_k
    assert kinds(passages) == {"Visible"}
    assert first.result is not None
    assert len(first.result["hits"]) == 5
    assert kinds([h["title"] for h in first.result["hits"]]) == {"Visible"}

    # The same task from the tenant-wide key: the twins come first.
    scripted_model.enqueue(search(QUERY))
    scripted_model.enqueue(finish())
    wide = await services.runs.submit(acme.principal, "assistant", QUERY)
    assert wide.access_tags is None
    await services.worker().run_until_idle()
    first = (await services.runs.steps(wide.id, acme.tenant.id))[0]
    assert kinds([p["title"] for p in first.context["passages"]]) == {"Hidden", "Untagged"}


async def test_a_policy_scope_and_a_key_scope_both_hold(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    for title, tags in (
        ("HR", ("hr",)),
        ("Public only", ("public",)),
        ("Eng only", ("eng",)),
        ("Public eng", ("eng", "public")),
    ):
        await services.documents.ingest(
            acme.tenant.id, title=title, text=f"Holiday rules, {title}.", tags=tags
        )
    await services.policies.apply(
        "acme", None, '[data]\nsearch_tags = ["public", "hr"]\n', name="t.toml", actor="test"
    )
    key = await restricted(services, ["hr", "eng"], roles=(Role.CLIENT,))
    scripted_model.enqueue(search("holiday rules"))
    scripted_model.enqueue(finish())
    run = await services.runs.submit(key, "assistant", "holiday rules")
    await services.worker().run_until_idle()
    first = (await services.runs.steps(run.id, acme.tenant.id))[0]
    # One of the policy's tags and one of the key's: "Public only" fails the key, "Eng only"
    # the policy; "Public eng" passes both, each on a tag of its own.
    assert {p["title"] for p in first.context["passages"]} == {"HR", "Public eng"}
    assert first.result is not None
    assert {h["title"] for h in first.result["hits"]} == {"HR", "Public eng"}


async def test_a_fork_keeps_its_parents_scope_and_a_key_forks_only_runs_it_sees(
    services: Services, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.enqueue(finish())
    scripted_model.enqueue(finish())
    wide = await services.runs.submit(acme.principal, "assistant", "question?")
    hr = await restricted(services, ["hr", "legal"])
    mine = await services.runs.submit(hr, "assistant", "question?")
    await services.worker().run_until_idle()

    # A run of the whole tenant, or of a scope wider than the key's, is not the key's to fork.
    for parent, tags in ((wide, hr.access_tags), (mine, ("legal",)), (mine, ("legal", "eng"))):
        with pytest.raises(NotFound):
            await services.forks.fork(
                parent.id, acme.tenant.id, from_step=0, actor="t", access_tags=tags
            )
    own = await services.forks.fork(
        mine.id, acme.tenant.id, from_step=0, actor="t", access_tags=hr.access_tags
    )
    assert own.access_tags == ("hr", "legal")
    wider_key = await services.forks.fork(
        mine.id, acme.tenant.id, from_step=0, actor="t", access_tags=("eng", "hr", "legal")
    )
    assert wider_key.access_tags == ("hr", "legal")  # a fork never widens its parent's scope
    inherited = await services.forks.fork(own.id, acme.tenant.id, from_step=0, actor="t")
    assert inherited.access_tags == ("hr", "legal")
    assert (
        await services.forks.fork(wide.id, acme.tenant.id, from_step=0, actor="t")
    ).access_tags is None


def test_migration_0011_refuses_to_widen_keys_and_goes_both_ways(pg_cluster: PgCluster) -> None:
    name = create_database(pg_cluster, migrated=False)
    url = pg_cluster.url_for(name)
    try:
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            tenant = conn.execute(
                "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'acme') RETURNING id"
            ).fetchone()
            assert tenant is not None
            insert_key = (
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, roles, access_tags)"
                " VALUES (gen_random_uuid(), %s, 'k', 'gk_x', %s, '{client}', %s) RETURNING id"
            )
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(insert_key, (tenant[0], "0" * 64, []))
            key = conn.execute(insert_key, (tenant[0], "1" * 64, ["hr"])).fetchone()
            assert key is not None
        with pytest.raises(MigrationError, match="1 unrevoked API keys"):
            migrate.downgrade(url, "0010")
        # Each revision commits alone (`datastore.migrate`): 0012 went down, 0011 was refused
        # and dropped nothing.
        assert migrate.status(url).current == "0011"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key[0],))
            run = queue_scoped_run(conn, tenant[0])
        with pytest.raises(MigrationError, match="1 unfinished runs"):
            migrate.downgrade(url, "0010")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE runs SET status = 'cancelled' WHERE id = %s", (run,))
        migrate.downgrade(url, "0010")
        assert migrate.status(url).current == "0010"
        with psycopg.connect(url) as conn:
            columns = conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE column_name = 'access_tags' ORDER BY table_name"
            ).fetchall()
            assert columns == []
        assert migrate.upgrade(url).up_to_date
        with psycopg.connect(url) as conn:
            columns = conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE column_name = 'access_tags' ORDER BY table_name"
            ).fetchall()
            assert columns == [("api_keys",), ("runs",)]
            # The key that was revoked comes back as a key of its whole tenant, still revoked.
            back = conn.execute("SELECT access_tags, revoked_at IS NOT NULL FROM api_keys")
            assert back.fetchall() == [(None, True)]
    finally:
        drop_database(pg_cluster, name)


def queue_scoped_run(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> uuid.UUID:
    agent = conn.execute(
        "INSERT INTO agents (id, tenant_id, name, instructions, allowed_tools, model_role,"
        " max_steps, retrieval_k, version) VALUES (gen_random_uuid(), %s, 'a', 'i',"
        " '{finish}', 'decide', 3, 0, 1) RETURNING id",
        (tenant_id,),
    ).fetchone()
    assert agent is not None
    run = conn.execute(
        "INSERT INTO runs (id, tenant_id, agent_id, agent_name, input, status, step_count,"
        " attempts, prompt_tokens, completion_tokens, access_tags) VALUES (gen_random_uuid(),"
        " %s, %s, 'a', 'q', 'queued', 0, 0, 0, 0, '{hr}') RETURNING id",
        (tenant_id, agent[0]),
    ).fetchone()
    assert run is not None
    return uuid.UUID(str(run[0]))
