"""The guard alone: every escape in the corpus is refused for its reason; plain reads pass and
what runs is rendered from the checked tree (qualified, comments gone)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.ports import SqlCatalog
from agent.sqlguard import MAX_SQL_CHARS, Accepted, Rejected, SqlChecks, check, guard
from tests.sql.corpus import ESCAPES, Escape

CATALOG = SqlCatalog(
    schema="tenant_data",
    views={
        "orders": ("id", "customer_id", "product", "quantity", "amount", "status", "ordered_at"),
        "customers": ("id", "name", "country", "segment", "since"),
    },
    functions=frozenset({"fiscal_quarter"}),
)
OTHER = "garrison_t_" + "b" * 32


def fill(escape: Escape) -> str:
    return escape.sql.format(other=OTHER, other_id="b" * 32)


@pytest.mark.parametrize("escape", [e for e in ESCAPES if e.reason], ids=lambda e: e.name)
def test_every_escape_is_rejected_for_its_reason(escape: Escape) -> None:
    verdict = check(fill(escape), CATALOG)
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason == escape.reason, verdict.message
    assert verdict.message


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from orders", "SELECT * FROM tenant_data.orders"),
        (
            "SELECT c.name, count(*) AS n, sum(o.amount) FROM orders o "
            "JOIN customers c ON c.id = o.customer_id GROUP BY c.name ORDER BY n DESC LIMIT 5",
            "SELECT c.name, count(*) AS n, sum(o.amount) FROM tenant_data.orders AS o "
            "INNER JOIN tenant_data.customers AS c ON c.id = o.customer_id GROUP BY c.name "
            "ORDER BY n DESC LIMIT 5",
        ),
        (
            "select /* why */ id -- not this\n from tenant_data.orders",
            "SELECT id FROM tenant_data.orders",
        ),
        (
            "with recent as (select * from orders where ordered_at > now() - interval '30 days')"
            " select fiscal_quarter(ordered_at::date), count(*) from recent group by 1",
            "WITH recent AS (SELECT * FROM tenant_data.orders WHERE ordered_at > now() - "
            "CAST('30 days' AS interval)) SELECT tenant_data.fiscal_quarter(CAST(ordered_at AS "
            "date)), count(*) FROM recent GROUP BY 1",
        ),
        (
            "select status, rank() over (order by amount desc) from orders "
            "where product ilike 'NW-%' and customer_id in (select id from customers)",
            "SELECT status, rank() OVER (ORDER BY amount DESC) FROM tenant_data.orders "
            "WHERE product ILIKE 'NW-%' AND customer_id IN (SELECT id FROM tenant_data.customers)",
        ),
        ("select extract(year from current_date)", "SELECT EXTRACT(YEAR FROM CURRENT_DATE)"),
    ],
)
def test_plain_reads_pass_and_run_as_rendered(sql: str, expected: str) -> None:
    verdict = check(sql, CATALOG)
    assert isinstance(verdict, Accepted), verdict
    assert verdict.sql == expected


def test_the_views_read_are_reported_once_each() -> None:
    verdict = check("select * from orders o, customers c, orders p where o.id = p.id", CATALOG)
    assert isinstance(verdict, Accepted)
    assert verdict.views == ("orders", "customers")


def test_a_cte_may_take_a_views_name_without_reaching_anything_else() -> None:
    verdict = check("with orders as (select 1 as id) select id from orders", CATALOG)
    assert isinstance(verdict, Accepted)
    assert verdict.sql == "WITH orders AS (SELECT 1 AS id) SELECT id FROM orders"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        ("   ;  ", "empty"),
        ("select 1" + " " * MAX_SQL_CHARS, "too_long"),
        ("select 1\x00", "syntax_error"),
        ("select " + "abs(" * 790 + "1" + ")" * 790, "too_complex"),
        ("select from where", "syntax_error"),
        ("select * from orders tablesample system (10)", "syntax_not_allowed"),
        ("select xmlparse(document '<a/>')", "syntax_not_allowed"),
        ("select 1 operator(public.=) 1", "operator_not_allowed"),
        ("select * from rows from (generate_series(1, 2)) as g(a int)", "syntax_not_allowed"),
        ("select tenant_data.nope()", "function_not_allowed"),
        ("select other.fiscal_quarter(now()::date)", "function_not_allowed"),
        ("select 1::setof int", "type_not_allowed"),
    ],
)
def test_edges_are_refused(sql: str, reason: str) -> None:
    verdict = check(sql, CATALOG)
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason == reason, verdict.message


def test_an_empty_catalog_refuses_every_relation() -> None:
    verdict = check("select * from orders", SqlCatalog(schema="tenant_data", views={}))
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "relation_not_allowed"
    assert "(none)" in verdict.message


def test_sql_checks_reuse_an_answer_for_the_same_text_and_catalog_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    checked = guard._checked

    def spy(sql: str, catalog: SqlCatalog) -> Accepted:
        parsed.append(sql)
        return checked(sql, catalog)

    monkeypatch.setattr(guard, "_checked", spy)
    checks = SqlChecks(size=2)
    a, b, c = "select id from orders", "select id from customers", "select name from customers"
    first = checks.check(a, CATALOG)
    assert checks.check(a, CATALOG) is first
    assert parsed.count(a) == 1
    # An equal catalog read again may not be the one the answer was for: checked again.
    assert checks.check(a, replace(CATALOG)) == first
    assert parsed.count(a) == 2
    checks.check(a, CATALOG)
    checks.check(b, CATALOG)
    checks.check(a, CATALOG)  # a lookup, which makes `b` the oldest answer
    checks.check(c, CATALOG)  # a third answer: `b` is forgotten
    checks.check(a, CATALOG)
    checks.check(b, CATALOG)
    assert [parsed.count(sql) for sql in (a, b, c)] == [3, 2, 1]
