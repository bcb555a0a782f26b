"""Rules on the views an sql_query reads (`part = "view"`), on real Postgres with a real worker:
the SQL guard's parse of the query, not its text, says which views it reads; a query over an
allowed view runs, one over a listed view waits for approval or is denied, a query the guard
refuses is the guard's to answer, and the model's SQL is parsed once per step."""

from __future__ import annotations

import psycopg
import pytest

from agent.domain import JSON, Run, RunStatus
from agent.errors import CallerError
from agent.policy.compiled import compile_document
from agent.policy.errors import InvalidPolicy
from agent.policy.evaluators import NO_CONTEXT, EvaluationContext, ProposedAction
from agent.policy.file import parse_policy
from agent.runtime import Services
from agent.sqlguard import guard
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture
from tests.outbox.conftest import finish
from tests.policy.conftest import apply, drive, pending_approval
from tests.sql.conftest import plant

PAYROLL_APPROVAL = """
[[rules]]
name = "payroll"
tools = ["sql_query"]
effect = "require_approval"
reason = "payroll needs a human"
when = [{ arg = "sql", part = "view", in = ["payroll"] }]
"""
LISTED_VIEWS_ONLY = """
[[rules]]
name = "listed-views-only"
tools = ["sql_query"]
effect = "deny"
reason = "agents read orders and customers only"
when = [{ arg = "sql", part = "view", not_in = ["orders", "customers"] }]
"""
ORDERS = "select count(*) from orders"
# Names payroll, but as its own WITH query: it reads no view at all.
NAMED_ONLY = "with payroll as (select 1 as n) select n from payroll"
PAYROLL = "select o.id, p.name from orders o join payroll p on p.id = o.customer_id order by o.id"


def query(sql: str) -> JSON:
    return {"tool": "sql_query", "arguments": {"sql": sql}}


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the SQL guard parses, in order."""
    texts: list[str] = []
    checked = guard._checked

    def spy(sql: str, catalog: object) -> guard.Accepted:
        texts.append(sql)
        return checked(sql, catalog)  # type: ignore[arg-type]

    monkeypatch.setattr(guard, "_checked", spy)
    return texts


async def analyst_run(
    services: Services,
    fx: TenantFixture,
    database_url: str,
    model: ScriptedModelServer,
    answers: list[JSON],
) -> Run:
    """A run of an agent allowed sql_query over the demo views and a `payroll` view."""
    plant(database_url, fx.tenant.id, "ACMEONLY")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE garrison_sql_views")  # views agents may read are its (README)
        conn.execute("CREATE VIEW tenant_data.payroll AS SELECT id, name FROM org_data.customers")
    await services.tenancy.put_agent(
        fx.tenant.name, "analyst", instructions="Answer from the records.",
        tools=["sql_query", "finish"], retrieval_k=0, actor="test",
    )  # fmt: skip
    for answer in answers:
        model.enqueue(answer)
    run = await services.runs.submit(fx.principal, "analyst", "who is paid what?")
    return await drive(services, run)


async def test_a_query_over_a_listed_view_waits_for_approval_and_the_others_run(
    services: Services,
    acme: TenantFixture,
    database_url: str,
    scripted_model: ScriptedModelServer,
    parsed: list[str],
) -> None:
    await apply(services, "acme", PAYROLL_APPROVAL)
    answers = [query(ORDERS), query(NAMED_ONLY), query(PAYROLL)]
    run = await analyst_run(services, acme, database_url, scripted_model, answers)
    assert run.status is RunStatus.AWAITING_APPROVAL
    orders, named, gated = await services.runs.steps(run.id, acme.tenant.id)
    assert orders.result is not None
    assert (orders.result["views"], orders.result["rows"]) == (["orders"], [[30]])
    assert named.result is not None
    assert (named.result["views"], named.result["rows"]) == ([], [[1]])
    assert [s.decision["policy"]["verdict"] for s in (orders, named)] == ["allow", "allow"]
    # Each query the model wrote was parsed once: by the gate, the tool's check a lookup.
    assert [parsed.count(sql) for sql in (ORDERS, NAMED_ONLY, PAYROLL)] == [1, 1, 1]

    approval = await pending_approval(services, run)
    assert (approval.step_number, approval.rule, approval.reason) == (
        3,
        "payroll",
        "payroll needs a human",
    )
    assert gated.result is not None
    assert gated.result["approval"]["status"] == "pending"
    # An edit is checked by the guard and the policy as a proposal is.
    with pytest.raises(CallerError, match="invalid arguments for sql_query: schema 'org_data'"):
        await services.approvals.approve(
            approval.id, acme.tenant.id, actor="a", arguments={"sql": "select * from org_data.x"}
        )
    await services.approvals.approve(approval.id, acme.tenant.id, actor="key:ann")
    scripted_model.enqueue(finish("Two names."))
    assert (await drive(services, run)).status is RunStatus.SUCCEEDED
    executed = (await services.runs.steps(run.id, acme.tenant.id))[3]
    assert executed.decision["policy"]["rule"] == "payroll"  # judged again, approved
    assert executed.result is not None
    assert executed.result["views"] == ["orders", "payroll"]
    assert executed.result["rows"][0] == [1, "ACMEONLY AG"]

    # A draft judges recorded queries by the views their results name; one that never ran
    # (the gated step) has none recorded, and a view rule then applies: it fails closed.
    draft = PAYROLL_APPROVAL.replace('"require_approval"', '"deny"')
    report = await services.policies.test(draft, name="d.toml", tenant_name="acme", agent=None,
                                          limit=10)  # fmt: skip
    assert [(c.step, c.recorded["verdict"], c.draft["verdict"]) for c in report.changes] == [
        (3, "require_approval", "deny")
    ]


async def test_a_denied_view_never_runs_and_a_refused_query_is_the_guards(
    services: Services,
    acme: TenantFixture,
    database_url: str,
    scripted_model: ScriptedModelServer,
    parsed: list[str],
) -> None:
    await apply(services, "acme", LISTED_VIEWS_ONLY)
    refused = "select * from org_data.orders"
    answers = [query(PAYROLL), query(refused), query("select count(*) from customers"), finish()]
    run = await analyst_run(services, acme, database_url, scripted_model, answers)
    assert run.status is RunStatus.SUCCEEDED, (run.failure_code, run.failure_detail)
    denied, rejected, allowed, _ = await services.runs.steps(run.id, acme.tenant.id)

    assert denied.result == {
        "error": {
            "code": "policy_denied",
            "message": "agents read orders and customers only (rule listed-views-only)",
        }
    }
    assert denied.decision["policy"]["verdict"] == "deny"
    # Refused by the guard at the gate, in the tool's words: not the policy's refusal.
    assert rejected.result is not None
    assert (rejected.result["error"]["code"], rejected.result["error"]["reason"]) == (
        "sql_rejected",
        "schema_not_allowed",
    )
    assert "policy" not in rejected.decision
    assert parsed.count(refused) == 1  # the gate's check; the tool never ran
    assert allowed.result is not None
    assert (allowed.result["views"], allowed.result["rows"]) == (["customers"], [[2]])
    assert allowed.decision["policy"]["verdict"] == "allow"


def test_view_conditions_are_validated_with_their_lines() -> None:
    source = """description = "views"

[[rules]]
name = "wrong-arg"
tools = ["sql_query"]
effect = "deny"
when = [{ arg = "query", part = "view", in = ["payroll"] }]

[[rules]]
name = "not-a-name-test"
tools = ["sql_query"]
effect = "deny"
when = [{ arg = "sql", part = "view", greater_than = 3 }]

[[rules]]
name = "not-only-sql"
tools = ["sql_query", "send_email"]
effect = "require_approval"
when = [{ arg = "sql", part = "view", equals = "payroll" }]
"""
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy(source, name="v.toml")
    assert str(raised.value).splitlines() == [
        'v.toml:7: rules[0].when[0]: part = "view" reads sql_query\'s SQL: give arg = "sql"',
        'v.toml:13: rules[1].when[0]: part = "view" compares view names: use one of equals, in,'
        " not_in, matches, regex",
        'v.toml:15: rules[2]: a condition on part = "view" needs tools = ["sql_query"]',
    ]
    assert raised.value.line == 7


def test_view_conditions_compare_the_views_given_and_fail_closed_without_them() -> None:
    policy = compile_document(parse_policy(PAYROLL_APPROVAL + LISTED_VIEWS_ONLY))
    call = ProposedAction("sql_query", {"sql": "anything: the text is not read"})

    def rule(views: tuple[str, ...] | None) -> str | None:
        return policy.chain.evaluate(call, EvaluationContext(views=views)).rule

    assert rule(("orders", "customers")) is None
    assert rule(()) is None  # reads no view: none listed, none outside the list
    assert rule(("orders", "payroll")) == "listed-views-only"  # deny beats approval
    assert rule(None) == "listed-views-only"  # not known: every view rule applies
    approval_only = compile_document(parse_policy(PAYROLL_APPROVAL))
    assert approval_only.chain.evaluate(call, EvaluationContext(views=("payroll",))).kind == (
        "require_approval"
    )
    # Other tools have no views; a view rule names sql_query alone.
    email = ProposedAction("send_email", {"to": ["eve@partner.example"]})
    assert policy.chain.evaluate(email, NO_CONTEXT).kind == "allow"
