"""Loop detection as pure functions over steps: no database, no model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.domain import JSON, Step, StepStatus
from agent.loopdetect import (
    LoopTracker,
    detect_loop,
    information,
    normalise,
    result_fingerprint,
)

RUN = uuid.uuid4()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def step(
    number: int,
    tool: str | None,
    arguments: JSON | None = None,
    result: Any = None,
    *,
    status: StepStatus = StepStatus.COMPLETED,
    passages: list[int] | None = None,
) -> Step:
    context: JSON = {"history_steps": list(range(1, number))}
    if passages is not None:
        context["passages"] = [{"chunk_id": c, "title": "t"} for c in passages]
    return Step(
        run_id=RUN,
        number=number,
        status=status,
        context=context,
        decision={},
        tool=tool,
        arguments=arguments,
        result=result,
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        model_ms=0.0,
        tool_ms=0.0,
        started_at=NOW,
        finished_at=NOW,
    )


def hits(*chunk_ids: int) -> JSON:
    return {"hits": [{"chunk_id": c, "title": f"doc {c}", "score": 0.5} for c in chunk_ids]}


def search(number: int, query: str, *chunks: int, **kw: Any) -> Step:
    return step(number, "search_documents", {"query": query}, hits(*chunks), **kw)


def detect(steps: list[Step], repeats: int = 3, window: int = 4) -> Any:
    return detect_loop(steps, max_repeats=repeats, stale_window=window)


def test_normalising_collapses_whitespace_and_case_at_every_depth() -> None:
    assert normalise({"q": "  Annual   LEAVE\n", "tags": ["HR ", "a  b"], "n": 3}) == {
        "q": "annual leave",
        "tags": ["hr", "a b"],
        "n": 3,
    }


def test_the_same_call_with_the_same_result_three_times_is_a_loop() -> None:
    steps = [
        search(1, "annual leave", 1, 2),
        search(2, "Annual  Leave", 1, 2),  # the same call once normalised
        search(3, "annual leave ", 1, 2),
    ]
    assert detect(steps[:2]) is None
    found = detect(steps)
    assert found is not None
    assert found.rule == "repeat"
    assert found.steps == (1, 2, 3)
    assert 'search_documents {"query":"annual leave "}' in found.detail
    assert "3 times (steps 1, 2, 3)" in found.detail


def test_argument_key_order_does_not_matter() -> None:
    a = step(1, "lookup", {"a": 1, "b": "x"}, {"v": 1})
    b = step(2, "lookup", {"b": "X", "a": 1}, {"v": 1})
    assert detect([a, b], repeats=2, window=0) is not None


def test_a_different_result_is_not_a_repeat() -> None:
    steps = [
        step(1, "http_get", {"url": "u"}, {"status": 200, "body": "a"}),
        step(2, "http_get", {"url": "u"}, {"status": 200, "body": "b"}),
        step(3, "http_get", {"url": "u"}, {"status": 200, "body": "c"}),
    ]
    assert detect(steps, window=0) is None


def test_different_arguments_are_not_a_repeat() -> None:
    steps = [search(n, f"query {n}", n) for n in range(1, 6)]
    assert detect(steps) is None


def test_repeats_need_not_be_consecutive() -> None:
    steps = [
        search(1, "a", 1),
        search(2, "b", 2),
        search(3, "a", 1),
        search(4, "c", 3),
        search(5, "a", 1),
    ]
    found = detect(steps, window=0)
    assert found is not None
    assert found.steps == (1, 3, 5)


def test_step_specific_keys_do_not_hide_a_repeated_side_effect() -> None:
    def email(n: int) -> Step:
        result = {"queued": True, "to": ["a@x.org"], "idempotency_key": f"run:{n}:0"}
        return step(n, "send_email", {"to": ["a@x.org"], "subject": "s"}, result)

    found = detect([email(1), email(2), email(3)], window=0)
    assert found is not None
    assert found.rule == "repeat"


def test_searches_that_only_find_chunks_already_seen_are_stale() -> None:
    steps = [
        search(1, "leave", 1, 2, passages=[1, 2, 3]),  # nothing beyond the passages
        search(2, "holiday", 2, 3),
        search(3, "vacation", 3, 1),
        search(4, "days off", 1),
    ]
    found = detect(steps)
    assert found is not None
    assert found.rule == "stale"
    assert found.steps == (1, 2, 3, 4)
    assert "the last 4 tool calls brought no new information" in found.detail
    assert 'search_documents {"query":"days off"}' in found.detail


def test_one_new_chunk_restarts_the_window() -> None:
    steps = [
        search(1, "a", 1, passages=[1]),
        search(2, "b", 1),
        search(3, "c", 1, 9),  # chunk 9 is new
        search(4, "d", 9),
        search(5, "e", 1),
        search(6, "f", 9),
    ]
    assert detect(steps) is None
    found = detect([*steps, search(7, "g", 1, 9)])
    assert found is not None
    assert found.steps == (4, 5, 6, 7)


def test_identical_results_of_other_tools_are_stale() -> None:
    steps = [step(n, "noop", {"note": f"turn {n}"}, {"ok": True}) for n in range(1, 6)]
    found = detect(steps, repeats=0, window=4)
    assert found is not None
    assert found.steps == (2, 3, 4, 5)  # the first {"ok": true} was new


def test_finish_and_failed_steps_are_not_tool_calls() -> None:
    steps = [
        search(1, "a", 1),
        step(2, "finish", {"answer": "x"}, {"answer": "x"}),
        step(3, None, None, {"error": "x"}, status=StepStatus.FAILED),
        search(4, "a", 1),
    ]
    assert detect(steps, repeats=3, window=0) is None


def test_rules_switched_off() -> None:
    steps = [search(n, "same", 1) for n in range(1, 8)]
    assert detect(steps, repeats=0, window=0) is None
    assert detect(steps, repeats=0, window=4) is not None
    assert detect(steps, repeats=3, window=0) is not None
    assert not LoopTracker(0, 0).enabled


@pytest.mark.parametrize("repeats", [2, 3, 5])
def test_the_tracker_agrees_with_the_pure_function_step_by_step(repeats: int) -> None:
    steps = [
        search(1, "a", 1, passages=[7]),
        search(2, "b", 7),
        search(3, "a", 1),
        step(4, "noop", {"n": 1}, {"ok": True}),
        search(5, "A", 1),
        step(6, "noop", {"n": 2}, {"ok": True}),
        search(7, "c", 2),
        search(8, "a", 1),
    ]
    tracker = LoopTracker(repeats, 3)
    for n in range(1, len(steps) + 1):
        assert tracker.observe(steps[n - 1]) == detect(steps[:n], repeats=repeats, window=3)


def test_information_is_chunk_ids_for_searches_and_the_result_otherwise() -> None:
    assert information(hits(4, 5), "f") == frozenset({"chunk:4", "chunk:5"})
    assert information({"ok": True}, "abc") == frozenset({"result:abc"})
    assert result_fingerprint({"a": 1, "b": [1, 2]}) == result_fingerprint({"b": [1, 2], "a": 1})
    assert result_fingerprint({"a": 1}) != result_fingerprint({"a": 2})
