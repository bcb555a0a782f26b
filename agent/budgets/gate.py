"""The budget gate of one run: what the run loop asks before each step, model call and tool call.

Per-run limits are checked in memory against the run's own record (steps taken, tokens, tool
calls, seconds since it started). Daily limits go through the store: before each model call the
call's worst case (`decision_max_tokens` plus an estimate of the prompt) is reserved on every
daily scope of the run in one guarded statement, and after it the reservation is settled with the
tokens the model reported. A call is made only if its worst case fits, so concurrent runs on one
scope cannot overspend it; a call that uses more than its reservation (a prompt estimate too
low) overspends by at most that difference.

Exhaustion is raised as `BudgetExhausted` at the gate and turned into the run's ending by the
loop (`budget_exhausted`, with a rule-based message naming the budget, its limit and its use);
it never escapes the loop. A run with no budget configured gets `UNLIMITED`, which does nothing
and touches no database.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

from agent import codes
from agent.budgets.model import (
    BudgetRule,
    Dimension,
    Exhaustion,
    Refusal,
    Reservation,
)
from agent.budgets.ports import BudgetStore
from agent.domain import Run, RunOutcome, RunStatus, Step, StepStatus
from agent.errors import AgentError
from agent.tools.finish import Finish
from serving.errors import ModelOutputError
from serving.types import Message

MESSAGE_OVERHEAD_TOKENS = 8
"""Added per message to the prompt estimate: role markers and the chat template's separators."""
CONTENTION_PAUSE_S = 0.02
CONTENTION_PAUSE_MAX_S = 1.0
"""Backoff between attempts to reserve tokens that calls in flight hold."""


class BudgetExhausted(AgentError):
    """A budget cannot cover what the run is about to do; the loop ends the run with it."""

    code = codes.BUDGET_EXHAUSTED

    def __init__(self, exhaustion: Exhaustion, action: object | None = None) -> None:
        super().__init__(exhaustion.message())
        self.exhaustion = exhaustion
        self.action = action
        """The action the model chose, when a tool call was refused; None before a model call."""

    @property
    def outcome(self) -> RunOutcome:
        # The message is the run's final answer too: a client reading `output` learns why the
        # run stopped without having to know the failure codes.
        return RunOutcome(
            RunStatus.BUDGET_EXHAUSTED,
            output=self.message,
            failure_code=codes.BUDGET_EXHAUSTED,
            failure_detail=self.message,
        )


def estimate_prompt_tokens(messages: Sequence[Message], bytes_per_token: float) -> int:
    """An upper estimate of a prompt's tokens: its UTF-8 bytes over `bytes_per_token`, plus a
    few tokens per message. BPE tokenizers average about four bytes per token on English text
    and prose in other Latin scripts; three leaves room for JSON, code and numbers."""
    size = sum(len(str(m.get("content", "")).encode()) for m in messages)
    return math.ceil(size / bytes_per_token) + MESSAGE_OVERHEAD_TOKENS * len(messages)


@dataclass
class CallMeter:
    """Handed to the body of `RunBudget.model_call`; the body reports the call's real usage."""

    used: int | None = None

    def charge(self, tokens: int) -> None:
        self.used = tokens


@dataclass(frozen=True, slots=True)
class RunLimit:
    """The tightest per-run limit of one dimension, and the rule it comes from."""

    limit: float
    rule: BudgetRule


def tightest(rules: Sequence[BudgetRule]) -> dict[Dimension, RunLimit]:
    """Per dimension, the lowest limit among the rules (every rule applies, so the lowest wins)."""
    found: dict[Dimension, RunLimit] = {}
    for rule in rules:
        for dimension in Dimension:
            value = rule.limits.get(dimension)
            if value is not None and (dimension not in found or value < found[dimension].limit):
                found[dimension] = RunLimit(value, rule)
    return found


def _contended(refusal: Refusal, wanted: Reservation) -> bool:
    """Whether a refusal is only for tokens other calls hold: it would fit once they settle."""
    usage, limits = refusal.usage, refusal.limits
    return (
        (limits.tokens is None or usage.tokens_used + wanted.tokens <= limits.tokens)
        and (limits.steps is None or usage.steps_used + wanted.steps <= limits.steps)
        and (
            limits.tool_calls is None
            or usage.tool_calls_used + wanted.tool_calls <= limits.tool_calls
        )
    )


def is_tool_call(step: Step) -> bool:
    """Whether a committed step ran a tool that tool-call budgets count (`finish` is not)."""
    return step.status is StepStatus.COMPLETED and step.tool not in (None, Finish.name)


def _today() -> date:
    return datetime.now(UTC).date()


class RunBudget:
    """One run's budgets for one drive of the loop (built at drive start by the directory)."""

    def __init__(
        self,
        *,
        run: Run | None,
        per_run: Mapping[Dimension, RunLimit],
        daily: Sequence[BudgetRule],
        store: BudgetStore | None,
        decision_max_tokens: int,
        bytes_per_token: float = 3.0,
        reservation_ttl_s: float = 600.0,
        contention_wait_s: float = 30.0,
        tool_calls: int = 0,
        paused_s: float = 0.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        today: Callable[[], date] = _today,
    ) -> None:
        if (per_run or daily) and run is None:
            raise ValueError("budgets apply to a run")
        if daily and store is None:
            raise ValueError("daily budgets need a store")
        self._run_id = run.id if run is not None else None
        self._started_at = run.started_at if run is not None else None
        self._paused_s = paused_s
        """Time since the start spent waiting for people (approvals): not the run's to spend."""
        self._per_run = dict(per_run)
        self._daily = {r.scope.key: r for r in daily}
        self._scopes = tuple(sorted(self._daily))
        self._store = store
        self._max_tokens = decision_max_tokens
        self._bytes_per_token = bytes_per_token
        self._ttl_s = reservation_ttl_s
        self._contention_wait_s = contention_wait_s
        self._now = now
        self._today = today
        self._tokens = run.prompt_tokens + run.completion_tokens if run is not None else 0
        self._tool_calls = tool_calls
        """Tool calls the run made so far (`finish` excepted), counted from its history."""

    @property
    def active(self) -> bool:
        return bool(self._per_run or self._daily)

    # -- at step boundaries ---------------------------------------------------------------------

    def at_boundary(self, run: Run) -> RunOutcome | None:
        """How the run ends before its next step because a per-run budget is spent; None while
        it may go on. In memory only."""
        if not self._per_run:
            return None
        self._tokens = run.prompt_tokens + run.completion_tokens
        steps = self._per_run.get(Dimension.STEPS)
        if steps is not None and run.step_count >= steps.limit:
            return BudgetExhausted(self._spent(steps, Dimension.STEPS, run.step_count)).outcome
        wall = self._per_run.get(Dimension.WALL_TIME)
        if wall is not None:
            elapsed = self._elapsed_s()
            if elapsed >= wall.limit:
                spent = self._spent(wall, Dimension.WALL_TIME, round(elapsed, 1))
                return BudgetExhausted(spent).outcome
        tokens = self._per_run.get(Dimension.TOKENS)
        if tokens is not None and self._tokens >= tokens.limit:
            return BudgetExhausted(self._spent(tokens, Dimension.TOKENS, self._tokens)).outcome
        return None

    def steps_left(self, run: Run) -> int | None:
        """Steps the run's per-run step budget still allows; None when it has none. A turn of
        parallel calls takes no more (each call is a step)."""
        steps = self._per_run.get(Dimension.STEPS)
        return None if steps is None else max(0, int(steps.limit) - run.step_count)

    def observe(self, step: Step) -> None:
        """Count a committed step's tool call."""
        if self.active and is_tool_call(step):
            self._tool_calls += 1

    # -- around each model call -----------------------------------------------------------------

    @asynccontextmanager
    async def model_call(
        self,
        messages: Sequence[Message],
        step_tokens: int,
        first_of_step: bool,
        max_tokens: int | None = None,
    ) -> AsyncIterator[CallMeter]:
        """Reserve the call's worst case, run the body (bounded by the run's remaining wall
        time), then settle the reservation with what the body reported on the meter.

        `step_tokens` are the tokens the current step spent so far (earlier attempts, the task's
        embedding); `first_of_step` counts the step against daily step limits; `max_tokens` is
        the call's completion bound when it is not the configured decision bound.
        """
        meter = CallMeter()
        if not self.active:
            yield meter
            return
        completion = self._max_tokens if max_tokens is None else max_tokens
        need = estimate_prompt_tokens(messages, self._bytes_per_token) + completion
        tokens = self._per_run.get(Dimension.TOKENS)
        if tokens is not None and self._tokens + step_tokens + need > tokens.limit:
            raise BudgetExhausted(
                self._spent(tokens, Dimension.TOKENS, self._tokens + step_tokens, need)
            )
        remaining = self._remaining_s()
        if remaining is not None and remaining <= 0:
            wall = self._per_run[Dimension.WALL_TIME]
            raise BudgetExhausted(self._spent(wall, Dimension.WALL_TIME, wall.limit - remaining))
        reservation = await self._reserve(tokens=need, steps=1 if first_of_step else 0)
        failure: BaseException | None = None
        try:
            if remaining is None:
                yield meter
            else:
                async with self._deadline(remaining):
                    yield meter
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if reservation is not None:
                assert self._store is not None
                used = meter.used
                if used is None:
                    # An answer the client could not use still cost tokens, up to the worst
                    # case; a call that got no answer is charged nothing.
                    used = need if isinstance(failure, ModelOutputError) else 0
                await self._store.settle(reservation, used)

    @asynccontextmanager
    async def _deadline(self, remaining: float) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(remaining) as scope:
                yield
        except TimeoutError:
            if not scope.expired():
                raise
            wall = self._per_run[Dimension.WALL_TIME]
            used = round(self._elapsed_s(), 1)
            raise BudgetExhausted(self._spent(wall, Dimension.WALL_TIME, used)) from None

    # -- before a tool runs ---------------------------------------------------------------------

    async def admit_tool_call(
        self, tool: str, action: object | None = None, admitted: int = 0
    ) -> None:
        """Count a tool call the model asked for, or raise if a budget has none left.
        `admitted`: calls of the same decision admitted before this one (parallel calls), not
        yet committed, so not yet counted."""
        if not self.active or tool == Finish.name:
            return
        calls = self._per_run.get(Dimension.TOOL_CALLS)
        used = self._tool_calls + admitted
        if calls is not None and used + 1 > calls.limit:
            raise BudgetExhausted(self._spent(calls, Dimension.TOOL_CALLS, used, 1), action)
        if any(r.limits.tool_calls is not None for r in self._daily.values()):
            await self._reserve(tool_calls=1, action=action)

    # -- internals ------------------------------------------------------------------------------

    async def _reserve(
        self, *, tokens: int = 0, steps: int = 0, tool_calls: int = 0, action: object = None
    ) -> Reservation | None:
        if not self._daily:
            return None
        assert self._store is not None
        assert self._run_id is not None
        reservation = Reservation(
            id=uuid.uuid4(),
            run_id=self._run_id,
            scopes=self._scopes,
            day=self._today(),
            tokens=tokens,
            steps=steps,
            tool_calls=tool_calls,
            ttl_s=self._ttl_s,
        )
        refused = await self._store.reserve(reservation)
        # Reservations of workers that died before settling are reclaimed only when they stand
        # in the way: no sweeper, and nothing extra on the usual path.
        if refused and await self._store.reclaim_expired([r.scope for r in refused]):
            refused = await self._store.reserve(reservation)
        # Refused only because other calls in flight hold the tokens: they settle with what
        # they really used (usually far less than their worst case), so wait for them rather
        # than end a run on a budget that is not spent.
        deadline = time.monotonic() + self._contention_wait(reservation)
        pause = CONTENTION_PAUSE_S
        while refused and all(_contended(r, reservation) for r in refused):
            if time.monotonic() + pause > deadline:
                break
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter only
            pause = min(pause * 2, CONTENTION_PAUSE_MAX_S)
            refused = await self._store.reserve(reservation)
        if refused:
            raise BudgetExhausted(self._refusal(refused[0], reservation), action)
        return reservation

    def _contention_wait(self, reservation: Reservation) -> float:
        remaining = self._remaining_s()
        wait = self._contention_wait_s if reservation.tokens else 0.0
        return wait if remaining is None else max(0.0, min(wait, remaining))

    def _refusal(self, refusal: Refusal, wanted: Reservation) -> Exhaustion:
        rule = self._daily[refusal.scope]
        usage, limits = refusal.usage, refusal.limits
        budget = rule.describe()
        if limits.steps is not None and usage.steps_used + wanted.steps > limits.steps:
            return Exhaustion(budget, Dimension.STEPS, limits.steps, usage.steps_used, 0)
        if (
            limits.tool_calls is not None
            and usage.tool_calls_used + wanted.tool_calls > limits.tool_calls
        ):
            return Exhaustion(
                budget, Dimension.TOOL_CALLS, limits.tool_calls, usage.tool_calls_used
            )
        limit = limits.tokens if limits.tokens is not None else 0
        return Exhaustion(
            budget,
            Dimension.TOKENS,
            limit,
            usage.tokens_used,
            reserved=usage.tokens_reserved,
            needed=wanted.tokens,
        )

    def _spent(
        self, limit: RunLimit, dimension: Dimension, used: float, needed: float = 0
    ) -> Exhaustion:
        return Exhaustion(limit.rule.describe(), dimension, limit.limit, used, needed=needed)

    def _elapsed_s(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._now() - self._started_at).total_seconds() - self._paused_s

    def _remaining_s(self) -> float | None:
        wall = self._per_run.get(Dimension.WALL_TIME)
        if wall is None:
            return None
        return wall.limit - self._elapsed_s()


UNLIMITED = RunBudget(run=None, per_run={}, daily=(), store=None, decision_max_tokens=0)
"""The gate of a run no budget applies to: every check passes without any I/O."""
