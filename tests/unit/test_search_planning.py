"""Pure parts of search: when the index pays, which words the keyword half looks for, inputs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.errors import CallerError
from agent.services.document_input import DocumentInput, normalize_tags, prepare
from agent.services.search import metadata_condition
from agent.settings import AgentSettings
from agent.tools.search_documents import SearchArgs
from datastore.repos.search_plan import PlannerCosts, Strategy, choose_strategy
from datastore.repos.search_sql import keyword_query
from datastore.repos.search_tuning import EF_LADDER, MAX_EF_SEARCH, ef_for_rows, ladder_for

COSTS = PlannerCosts(ef_search=40, max_scan_tuples=20_000)


@pytest.mark.parametrize(
    ("in_scope", "table", "expected"),
    [
        (100_000, 100_000, Strategy.HNSW),  # everything: the index
        (10_000, 100_000, Strategy.HNSW),  # 10%: ~400 index visits beat 10,000 distances
        (1_000, 100_000, Strategy.EXACT),  # 1%: ~4,000 visits cost more than 1,000 distances
        (30, 100, Strategy.EXACT),  # fewer rows than candidates: nothing to gain
        (10_000, 10_000_000, Strategy.EXACT),  # 0.1%: the scan would hit its tuple cap
        (500_000, 10_000_000, Strategy.HNSW),
    ],
)
def test_the_cheaper_strategy_follows_the_rows_in_scope(
    in_scope: int, table: int, expected: Strategy
) -> None:
    assert choose_strategy(in_scope, table, 40, COSTS) is expected


@pytest.mark.parametrize(
    ("ef", "rows", "k", "expected"),
    [
        (24, 10, 10, 24),  # the calibrated top-k: the calibrated value
        (24, 3, 10, 24),  # fewer rows never keep fewer candidates than measured
        (24, 20, 10, 48),  # a hybrid search's 20-row pool: twice the candidates
        (24, 25, 10, 60),  # rounded up, never down
        (40, 100, 20, 200),  # scaled by the k it was measured at, not by 10
        (400, 100, 10, MAX_EF_SEARCH),  # never past pgvector's maximum
    ],
)
def test_ef_search_scales_with_the_rows_asked_for(
    ef: int, rows: int, k: int, expected: int
) -> None:
    assert ef_for_rows(ef, rows, k) == expected


def test_a_calibration_tries_no_fewer_candidates_than_rows_asked_for() -> None:
    assert ladder_for(10) == list(EF_LADDER)
    assert ladder_for(30)[0] == 32
    assert all(ef >= 30 for ef in ladder_for(30))
    assert ladder_for(EF_LADDER[-1] + 1) == [MAX_EF_SEARCH]  # past the ladder: the maximum


def test_stale_statistics_never_give_a_selectivity_above_one() -> None:
    assert choose_strategy(5_000, 100, 40, COSTS) is Strategy.HNSW


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("warranty terms for XK-4471-B", "XK-4471-B"),
        ("What did Okonkwo decide about GDPR?", "Okonkwo or GDPR"),
        ("invoice 2024 total", "2024"),
        ("annual leave days", "annual or leave or days"),
        ('-drop or "x" table; --', "drop or x or table"),
        ("?!", None),
    ],
)
def test_keyword_half_looks_for_identifiers_else_all_words(query: str, words: str | None) -> None:
    assert keyword_query(query) == words


def test_document_input_is_validated_and_keyed() -> None:
    settings = AgentSettings()
    doc = prepare(
        "x", DocumentInput("Body.\n", title=" A  title ", tags=("b", " a", "b")), settings
    )
    assert (doc.title, doc.tags) == ("A title", ("a", "b"))
    assert doc.key == f"sha256:{doc.content_hash}"  # no key, no source: the content is the key
    by_source = prepare("x", DocumentInput("Body.", source="s3://bucket/a"), settings)
    assert by_source.key == "s3://bucket/a"
    assert prepare("x", DocumentInput("Body.", source="s", key="k"), settings).key == "k"
    assert prepare("x", DocumentInput("\n\nFirst line\nmore"), settings).title == "First line"
    for bad, message in [
        (DocumentInput("x", title="  "), "title must be 1-300 characters"),
        (DocumentInput("x", key="k" * 2001), "longer than 2000 bytes"),
        (DocumentInput("x", source="é" * 1001), "longer than 2000 bytes"),
        (DocumentInput("x", tags=("t" * 65,)), "tags must be 1-64"),
    ]:
        with pytest.raises(CallerError, match=message):
            prepare("x", bad, settings)
    with pytest.raises(CallerError, match="at most 32 tags"):
        normalize_tags([f"t{i}" for i in range(33)])


def test_tool_conditions_read_json_values_else_text() -> None:
    assert metadata_condition("version=3") == ("version", 3)
    assert metadata_condition("draft=true") == ("draft", True)
    assert metadata_condition(" owner =hr") == ("owner", "hr")
    assert metadata_condition("note=a=b") == ("note", "a=b")
    with pytest.raises(ValidationError, match="should match pattern"):
        SearchArgs.model_validate({"query": "x", "where": ["no condition"]})
