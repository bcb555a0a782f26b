"""A per-run wall-time budget counts the run's own time, not the time people took to approve."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from agent.budgets.directory import awaiting_people_s
from agent.domain import Step, StepStatus

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def step(number: int, start_s: float, end_s: float, **context: object) -> Step:
    return Step(
        run_id=uuid.UUID(int=1),
        number=number,
        status=StepStatus.COMPLETED,
        context=dict(context),
        decision={},
        tool="send_email",
        arguments={},
        result={},
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        model_ms=0.0,
        tool_ms=0.0,
        started_at=T0 + timedelta(seconds=start_s),
        finished_at=T0 + timedelta(seconds=end_s),
    )


def test_time_between_an_approval_request_and_its_decision_is_not_the_runs() -> None:
    history = [
        step(1, 0, 2),
        step(2, 2, 3),  # asks for an approval
        step(3, 3603, 3604, approval_of_step=2),  # an hour later, the approved action runs
        step(4, 3604, 3606),
        step(5, 3606, 3607),  # asks again
        step(6, 3667, 3668, approval_of_step=5),
    ]
    assert awaiting_people_s(history) == 3600 + 60


def test_a_run_that_never_waited_has_no_pause() -> None:
    assert awaiting_people_s([step(1, 0, 1), step(2, 1, 2)]) == 0.0
    # A fork's copy of an approval step whose request was not copied: nothing to subtract.
    assert awaiting_people_s([step(3, 10, 11, approval_of_step=2)]) == 0.0
