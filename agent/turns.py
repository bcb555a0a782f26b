"""A turn's steps as the loop assembles them, and how each one leaves its run.

`StepDraft` collects what a step records while it is being taken; `settle_turn` and its helpers
decide, from the steps of one turn, whether the run ends (failed, stopped as a loop, past its
step limit), waits for approval or goes on. The rules live here, apart from the loop's I/O,
because replay applies the very same ones to recorded steps: a changed rule shows up there as a
divergence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent import codes
from agent.budgets.gate import BudgetExhausted
from agent.decision import Action
from agent.domain import (
    JSON,
    AgentDefinition,
    OutboxEffect,
    RunOutcome,
    RunStatus,
    Step,
    StepStatus,
)
from agent.loopdetect import LoopTracker


@dataclass
class StepDraft:
    """A step being assembled; frozen into a `Step` when it is committed."""

    run_id: Any
    number: int
    started_at: datetime
    context: JSON
    attempts: list[JSON] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_ms: float = 0.0
    tool_ms: float = 0.0
    deployment: str | None = None
    """The deployment whose answer became the step's action."""
    notes: JSON = field(default_factory=dict)
    """More about the decision, merged into `Step.decision` (a policy verdict, provenance,
    an approval)."""

    def freeze(
        self,
        status: StepStatus,
        *,
        action: Action | None = None,
        result: JSON | None = None,
        error_code: str | None = None,
    ) -> Step:
        decision: JSON = {"attempts": self.attempts}
        if action is not None:
            decision["action"] = {"tool": action.tool, "arguments": action.arguments}
            decision["deployment"] = self.deployment
        decision.update(self.notes)
        return Step(
            run_id=self.run_id,
            number=self.number,
            status=status,
            context=self.context,
            decision=decision,
            tool=action.tool if action else None,
            arguments=action.arguments if action else None,
            result=result,
            error_code=error_code,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            model_ms=round(self.model_ms, 3),
            tool_ms=round(self.tool_ms, 3),
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
        )


TakenStep = tuple[Step, RunOutcome, tuple[OutboxEffect, ...]]
"""A step ready to commit: the step, its effect on the run, and the side effects it queues."""

AWAITS = RunOutcome(RunStatus.AWAITING_APPROVAL)


def past_step_limit(agent: AgentDefinition, steps_taken: int) -> RunOutcome | None:
    """How a run ends once it has taken every step its agent allows; None while it may go on.
    Shared with replay, so a changed limit rule shows up as a divergence there."""
    if steps_taken < agent.max_steps:
        return None
    detail = f"the agent did not finish within {agent.max_steps} steps"
    return RunOutcome(
        RunStatus.FAILED, failure_code=codes.STEP_LIMIT_EXCEEDED, failure_detail=detail
    )


def continue_or_end(
    agent: AgentDefinition, step: Step, outcome: RunOutcome, loops: LoopTracker
) -> RunOutcome:
    """How a step leaves its run: its own ending if it has one, else stopped as a loop, else
    ended by the step limit, else still running. Shared with replay, like `past_step_limit`."""
    loop = loops.observe(step)
    if outcome.status is not None:
        return outcome
    if loop is not None:
        return RunOutcome(
            RunStatus.FAILED, failure_code=codes.LOOP_DETECTED, failure_detail=loop.detail
        )
    return past_step_limit(agent, step.number) or outcome


def settle_turn(
    agent: AgentDefinition, taken: Sequence[TakenStep], loops: LoopTracker | None
) -> tuple[list[TakenStep], RunOutcome]:
    """A turn's steps up to the first that ends the run, and the run's outcome after them: that
    ending, else awaiting approval when any step waits for a person, else still running.
    `loops` None (steps carrying out approval decisions) checks only the step limit. Shared
    with replay."""
    kept: list[TakenStep] = []
    waiting = False
    for step, outcome, effects in taken:
        if loops is not None:
            outcome = continue_or_end(agent, step, outcome, loops)
        elif outcome.status is None:
            outcome = past_step_limit(agent, step.number) or outcome
        kept.append((step, outcome, effects))
        if outcome.status is RunStatus.AWAITING_APPROVAL:
            waiting = True
        elif outcome.status is not None:
            return kept, outcome
    return kept, AWAITS if waiting else RunOutcome()


def failed_step(
    draft: StepDraft, code: str, detail: str, action: Action | None = None
) -> TakenStep:
    step = draft.freeze(StepStatus.FAILED, action=action, result={"error": detail}, error_code=code)
    return step, RunOutcome(RunStatus.FAILED, failure_code=code, failure_detail=detail), ()


def exhausted_step(draft: StepDraft, exc: BudgetExhausted) -> TakenStep:
    """A step a budget cut short after it asked the model: what it asked is recorded, with the
    action a refused tool call was for, and the run ends `budget_exhausted`."""
    action = exc.action if isinstance(exc.action, Action) else None
    result: JSON = {"error": exc.message}
    step = draft.freeze(
        StepStatus.FAILED, action=action, result=result, error_code=codes.BUDGET_EXHAUSTED
    )
    return step, exc.outcome, ()
