from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from agent.context import Passage, build_messages, context_record
from agent.domain import AgentDefinition, RunStatus, Step, StepStatus, check_transition
from agent.errors import IllegalTransition
from agent.outbox.settings import OutboxSettings
from agent.tools import DEFAULT_TOOLS, build_tools

NOW = datetime.now(UTC)
AGENT = AgentDefinition(
    id=uuid.uuid4(),
    tenant_id=uuid.uuid4(),
    name="assistant",
    instructions="Be helpful.",
    allowed_tools=("search_documents", "finish"),
    model_role="decide",
    max_steps=5,
    retrieval_k=2,
    version=1,
    created_at=NOW,
)
TOOLS = [t for n, t in build_tools(OutboxSettings()).items() if n in DEFAULT_TOOLS]
PASSAGES = [Passage(1, str(uuid.uuid4()), "Leave", 0.9, "30 days of leave.")]


def _step(n: int, result: dict[str, object]) -> Step:
    return Step(
        run_id=uuid.uuid4(),
        number=n,
        status=StepStatus.COMPLETED,
        context={},
        decision={},
        tool="search_documents",
        arguments={"query": f"q{n}", "k": 4},
        result=result,
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        model_ms=0,
        tool_ms=0,
        started_at=NOW,
        finished_at=NOW,
    )


def test_layout_is_stable_first_and_append_only() -> None:
    """Turn N's prompt is a strict prefix of turn N+1's: the engine's prefix cache can hit."""
    h1 = [_step(1, {"hits": ["a" * 5000]})]
    h2 = [*h1, _step(2, {"hits": []})]
    m1 = build_messages(AGENT, TOOLS, "task", PASSAGES, h1, result_chars=200)
    m2 = build_messages(AGENT, TOOLS, "task", PASSAGES, h2, result_chars=200)
    assert m2[: len(m1)] == m1
    assert m1[0]["role"] == "system"
    assert "Be helpful." in m1[0]["content"]
    assert "search_documents" in m1[0]["content"]
    assert "30 days of leave." in m1[1]["content"]
    # A long result is truncated when shown, so the history stays compact.
    assert len(m1[3]["content"]) < 300
    assert "truncated" in m1[3]["content"]


def test_context_record_hashes_the_prompt_and_keeps_passages() -> None:
    msgs = build_messages(AGENT, TOOLS, "task", PASSAGES, [], result_chars=200)
    rec = context_record(msgs, PASSAGES, [])
    assert len(rec["prompt_sha256"]) == 64
    assert rec["passages"][0]["title"] == "Leave"
    other = context_record(
        build_messages(AGENT, TOOLS, "other task", PASSAGES, [], result_chars=200), None, []
    )
    assert other["prompt_sha256"] != rec["prompt_sha256"]
    assert "passages" not in other


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (RunStatus.QUEUED, RunStatus.SUCCEEDED),
        (RunStatus.SUCCEEDED, RunStatus.RUNNING),
        (RunStatus.FAILED, RunStatus.QUEUED),
        (RunStatus.CANCELLED, RunStatus.RUNNING),
    ],
)
def test_illegal_transitions_are_refused(current: RunStatus, new: RunStatus) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, new)


def test_legal_transitions_pass() -> None:
    check_transition(RunStatus.QUEUED, RunStatus.RUNNING)
    check_transition(RunStatus.RUNNING, RunStatus.SUCCEEDED)
    check_transition(RunStatus.RUNNING, RunStatus.FAILED)
