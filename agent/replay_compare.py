"""Replay's verdicts: what a divergence is, and the pure comparisons that find one.

Each comparison looks at one recorded step (or the run's ending) next to what today's code
produced for it and returns the first difference as a `Divergence`, or None. The order of the
checks follows the order of a step: what the model was shown (`context_changed`), what was made
of its answers (`decision_changed`), what the step and the run came to (`outcome_changed`), and
whether the run ends where it ended (`missing_step`, `extra_step`). No I/O here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.domain import JSON, RunOutcome, Step
from agent.replay_recorded import recorded_action, recorded_calls


class DivergenceKind(StrEnum):
    CONTEXT_CHANGED = "context_changed"
    """The prompt today's code builds for the step is not the one recorded."""
    DECISION_CHANGED = "decision_changed"
    """Today's code makes something else of the same model answers (another action, another
    number of model calls, another validation verdict)."""
    OUTCOME_CHANGED = "outcome_changed"
    """The step's status, error or result, or the run's ending, differs."""
    EXTRA_STEP = "extra_step"
    """Today's code would go on after the step where the recorded run ended."""
    MISSING_STEP = "missing_step"
    """Today's code would end the run before a step the recording has."""


@dataclass(frozen=True, slots=True)
class Divergence:
    step: int
    """The first step (1-based) where today's code and the recording part ways."""
    kind: DivergenceKind
    field: str
    """What differed there, e.g. `context.prompt_sha256`, `action`, `run.status`."""
    recorded: Any
    replayed: Any
    message: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    run_id: uuid.UUID
    match: bool
    """True when today's code decides every recorded step as it was decided."""
    steps_recorded: int
    steps_matched: int
    """Steps replayed without any difference, before the divergence if there is one."""
    divergence: Divergence | None = None


def _diff(
    step: int, kind: DivergenceKind, field: str, recorded: Any, replayed: Any, message: str
) -> Divergence | None:
    if recorded == replayed:
        return None
    return Divergence(step, kind, field, recorded, replayed, message)


def compare_context(step: int, recorded: JSON, replayed: JSON) -> Divergence | None:
    kind = DivergenceKind.CONTEXT_CHANGED
    layout = _diff(
        step,
        kind,
        "context.format",
        recorded.get("format"),
        replayed.get("format"),
        "the context layout version changed, so the prompt is built differently",
    )
    if layout is not None:
        return layout
    sizes = (
        f"{recorded.get('messages')} -> {replayed.get('messages')} messages, "
        f"{recorded.get('prompt_chars')} -> {replayed.get('prompt_chars')} characters"
    )
    return _diff(
        step,
        kind,
        "context.prompt_sha256",
        recorded.get("prompt_sha256"),
        replayed.get("prompt_sha256"),
        f"today's code shows the model another prompt ({sizes})",
    )


def compare_decision(step: int, recorded: Step, replayed: Step, calls: int) -> Divergence | None:
    kind = DivergenceKind.DECISION_CHANGED
    return (
        _diff(
            step,
            kind,
            "action",
            recorded_action(recorded),
            recorded_action(replayed),
            "today's code makes another action of the recorded model answers",
        )
        or _diff(
            step,
            kind,
            "model_calls",
            recorded_calls(recorded),
            calls,
            "today's code stops asking the model at another attempt",
        )
        or _diff(
            step,
            kind,
            "attempts.error",
            _attempt_errors(recorded),
            _attempt_errors(replayed),
            "today's code judges the model's answers differently",
        )
    )


def _attempt_errors(step: Step) -> list[str | None]:
    return [a.get("error") for a in step.decision.get("attempts", [])]


def compare_step_outcome(step: int, recorded: Step, replayed: Step) -> Divergence | None:
    kind = DivergenceKind.OUTCOME_CHANGED
    return (
        _diff(
            step,
            kind,
            "status",
            str(recorded.status),
            str(replayed.status),
            "the step ends in another status",
        )
        or _diff(
            step,
            kind,
            "error_code",
            recorded.error_code,
            replayed.error_code,
            "the step fails for another reason",
        )
        or _diff(
            step,
            kind,
            "result",
            recorded.result,
            replayed.result,
            "today's code records another result for the same tool call",
        )
    )


def compare_ending(step: int, recorded: RunOutcome, replayed: RunOutcome) -> Divergence | None:
    """Both the recording and today's code end the run at `step`: do they end it alike?"""
    kind = DivergenceKind.OUTCOME_CHANGED
    return (
        _diff(
            step,
            kind,
            "run.status",
            _status(recorded),
            _status(replayed),
            "the run ends in another status",
        )
        or _diff(
            step,
            kind,
            "run.failure_code",
            recorded.failure_code,
            replayed.failure_code,
            "the run fails for another reason",
        )
        or _diff(
            step,
            kind,
            "run.output",
            recorded.output,
            replayed.output,
            "the run ends with another output",
        )
    )


def _status(outcome: RunOutcome) -> str | None:
    return None if outcome.status is None else str(outcome.status)


def describe_ending(outcome: RunOutcome) -> str:
    status = _status(outcome) or "running"
    return f"{status} ({outcome.failure_code})" if outcome.failure_code else status
