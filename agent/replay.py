"""Replay: re-drive today's orchestration code over a run's recorded steps — the upgrade check.

Today's `RunLoop.take_step` runs unchanged, step by step, against stand-ins that answer from the
recording (`agent.replay_recorded`): the recorded model attempts (recorded serving errors raised
again), the recorded tool results (nothing executed, no side effect, nothing written), the
passages recorded for the first step, and an in-memory history of the replayed steps. After each
step the recording and today's step are compared (`agent.replay_compare`) and the first
divergence is reported; `match` when there is none. No model is called and nothing is written.

Runs that ended for a reason outside the decision code (cancelled, parked, still running) are
compared over the steps they have; only succeeded and failed runs are held to their ending. A
fork's copied steps are replayed like the others, except that the fork going on after them (it
was forked there) is not a divergence.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent.context import Passage, context_record, passages_from_record
from agent.deciding import ModelResolver
from agent.domain import AgentDefinition, Run, RunOutcome, RunStatus, Step, StepStatus
from agent.errors import Conflict, NotFound
from agent.loop import RunLoop
from agent.ports import AgentStore, DocumentStore, RunStore
from agent.replay_compare import (
    Divergence,
    DivergenceKind,
    ReplayReport,
    compare_context,
    compare_decision,
    compare_ending,
    compare_step_outcome,
    describe_ending,
)
from agent.replay_recorded import (
    RecordedChat,
    RecordedModels,
    RecordedTools,
    ReplayStopped,
    recorded_tool,
)
from agent.settings import AgentSettings
from agent.tools import Tool
from agent.turns import past_step_limit, settle_turn

DECIDED_ENDINGS = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED})
"""Endings the loop's own decisions produce; any other status ended (or paused) the run from
outside (a cancel, a parked run), so replay does not expect today's code to reproduce it."""


class NothingToReplay(Conflict):
    code = "run_has_no_steps"


class ReplayAgentMissing(Conflict):
    code = "agent_missing"


class _RecordedRetrievalLoop(RunLoop):
    """Today's loop, except that the passages shown with the task are the recorded ones.

    The first step's retrieval is the only input `take_step` fetches itself; everything else
    reaches it through the stand-ins. Its recorded retrieval error, if any, is replayed too.
    """

    def __init__(
        self,
        first: Step,
        *,
        runs: RunStore,
        agents: AgentStore,
        documents: DocumentStore,
        models: ModelResolver,
        tools: Mapping[str, Tool[Any]],
        settings: AgentSettings,
    ) -> None:
        super().__init__(
            runs=runs,
            agents=agents,
            documents=documents,
            models=models,
            tools=tools,
            settings=settings,
        )
        self._first = first

    async def _retrieve(
        self, run: Run, agent: AgentDefinition
    ) -> tuple[list[Passage], int, str | None]:
        error = self._first.context.get("retrieval_error")
        return passages_from_record(self._first.context), 0, error


class ReplayService:
    def __init__(
        self,
        *,
        runs: RunStore,
        agents: AgentStore,
        documents: DocumentStore,
        tools: Mapping[str, Tool[Any]],
        settings: AgentSettings,
    ) -> None:
        self._runs = runs
        self._agents = agents
        self._documents = documents
        self._tools = tools
        self._settings = settings

    async def replay(
        self,
        run_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        *,
        access_tags: tuple[str, ...] | None = None,
    ) -> ReplayReport:
        """Compare run `run_id` (of `tenant_id`; None = any tenant, operators only) with what
        today's code decides over its recorded model outputs and tool results. A run that a
        restricted key (`access_tags`) may not see is `NotFound`, like another tenant's."""
        run = await self._runs.get_run(run_id, tenant_id, access_tags)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        # Read after the run, the steps include all the run counted, and maybe more that a
        # worker committed since: those are left out, so the steps and the run's status are
        # one snapshot (a run read as running must not be compared with its finishing step).
        steps = (await self._runs.list_steps(run_id, tenant_id))[: run.step_count]
        if not steps:
            raise NothingToReplay(f"run {run_id} has no recorded steps to replay ({run.status})")
        agent = await self._agents.get_agent_by_id(run.agent_id)
        if agent is None:
            raise ReplayAgentMissing(f"the agent of run {run_id} was deleted; nothing to replay")
        models = RecordedModels()
        recorded = RecordedTools({s.number: s for s in steps}, _final_answers(run, steps))
        # The agent's tools as today's registry defines them, in the agent's order (the order
        # is part of the prompt), each answering from the recording.
        tools = [
            recorded_tool(self._tools[name], recorded)
            for name in agent.allowed_tools
            if name in self._tools
        ]
        loop = _RecordedRetrievalLoop(
            steps[0],
            runs=self._runs,
            agents=self._agents,
            documents=self._documents,
            models=models,
            tools={t.name: t for t in tools},
            settings=self._settings,
        )
        return await _Replay(run, agent, steps, loop, models, tools).compare()


def _final_answers(run: Run, steps: Sequence[Step]) -> dict[int, str]:
    """The answer `finish` gave, by step: the output of a run its last step ended."""
    if run.status is RunStatus.SUCCEEDED and run.output is not None:
        return {steps[-1].number: run.output}
    return {}


def _decided_at(step: Step) -> int | None:
    """The step whose decision `step` is one of the parallel calls of, if it is one."""
    calls = step.decision.get("calls")
    first = calls.get("decided_at_step") if isinstance(calls, dict) else None
    return first if isinstance(first, int) and first != step.number else None


class _Replay:
    """One replay of one run: the steps so far, and where they stand against the recording."""

    def __init__(
        self,
        run: Run,
        agent: AgentDefinition,
        steps: Sequence[Step],
        loop: RunLoop,
        models: RecordedModels,
        tools: Sequence[Tool[Any]],
    ) -> None:
        self._run = run
        self._agent = agent
        self._steps = list(steps)
        self._loop = loop
        self._models = models
        self._tools = tools
        self._recorded_end: RunOutcome | None = None
        if run.status in DECIDED_ENDINGS:
            self._recorded_end = RunOutcome(run.status, run.output, run.failure_code)

    def _report(self, matched: int, divergence: Divergence | None = None) -> ReplayReport:
        return ReplayReport(
            run_id=self._run.id,
            match=divergence is None,
            steps_recorded=len(self._steps),
            steps_matched=matched,
            divergence=divergence,
        )

    async def compare(self) -> ReplayReport:
        history: list[Step] = []
        passages: list[Passage] | None = None
        loops = self._loop.loop_tracker()
        last = self._steps[-1].number
        at = 0
        while at < len(self._steps):
            recorded = self._steps[at]
            number = recorded.number
            at += 1
            if "resumed_step" in recorded.decision:
                # A person's decision carried out (an approved or denied action: governed
                # actions), not a model's: no decision of today's code to compare. It joins
                # the history as recorded, as it joined the live run's.
                history.append(recorded)
                loops.observe(recorded)
                continue
            limit = past_step_limit(self._agent, number - 1)
            if limit is not None:
                when = f"after step {number - 1} ({describe_ending(limit)})"
                return self._report(number - 1, self._missing(number, when))
            chat = RecordedChat(recorded)
            self._models.current = chat
            # The run as the loop saw it before this step: running, this many steps taken.
            before = replace(
                self._run,
                status=RunStatus.RUNNING,
                step_count=number - 1,
                output=None,
                failure_code=None,
                failure_detail=None,
            )
            try:
                taken = await self._loop.take_step(
                    before, self._agent, self._tools, passages, history
                )
            except ReplayStopped as stop:
                return self._report(number - 1, self._stopped(recorded, chat, history, stop))
            if passages is None:
                passages = passages_from_record(taken[0][0].context)
            kept, outcome = settle_turn(self._agent, taken, loops)
            # The recorded steps this turn made (parallel calls: the first and those it decided).
            turn = [recorded]
            while at < len(self._steps) and _decided_at(self._steps[at]) == number:
                turn.append(self._steps[at])
                at += 1
            for offset, (step, _outcome, _effects) in enumerate(kept):
                if offset >= len(turn):
                    return self._report(step.number - 1, self._extra_call(step))
                found = (
                    compare_context(step.number, turn[offset].context, step.context)
                    or compare_decision(
                        step.number, turn[offset], step, chat.calls if offset == 0 else 0
                    )
                    or compare_step_outcome(step.number, turn[offset], step)
                )
                if found is not None:
                    return self._report(step.number - 1, found)
                history.append(step)
            if len(kept) < len(turn):
                when = f"at step {kept[-1][0].number} ({describe_ending(outcome)})"
                return self._report(kept[-1][0].number, self._missing(len(kept) + number, when))
            recorded, number = turn[-1], turn[-1].number
            if number <= (self._run.forked_from_step or 0) < last:
                # A step copied into a fork: the fork went on after it because someone forked
                # it there, whatever the step did to the parent, so its ending is not compared.
                continue
            ending = self._ending(recorded, outcome, number == last)
            if ending is not None:
                return self._report(number - 1, ending)
        return self._report(len(self._steps))

    def _extra_call(self, step: Step) -> Divergence:
        return Divergence(
            step.number,
            DivergenceKind.EXTRA_STEP,
            "step",
            None,
            step.number,
            f"today's code makes one more call of the same decision at step {step.number} "
            f"({step.tool}); the recording has none",
        )

    def _stopped(
        self, recorded: Step, chat: RecordedChat, history: Sequence[Step], stop: ReplayStopped
    ) -> Divergence:
        number = recorded.number
        if chat.first_messages is not None:
            # The step stopped half-way, but the prompt it was built on is known: a changed
            # prompt is the first difference, and likely the reason for the rest.
            shown = context_record(chat.first_messages, None, history)
            changed = compare_context(number, recorded.context, shown)
            if changed is not None:
                return changed
        return Divergence(
            number, DivergenceKind.DECISION_CHANGED, stop.field, stop.recorded, stop.replayed,
            stop.message,
        )  # fmt: skip

    def _ending(self, recorded: Step, replayed: RunOutcome, last: bool) -> Divergence | None:
        number = recorded.number
        ends = replayed.status is not None and replayed.status.terminal
        if not last:
            if ends:
                when = f"at step {number} ({describe_ending(replayed)})"
                return self._missing(number + 1, when)
            return None
        if self._recorded_end is None:
            if not ends:
                return None
            return Divergence(
                number,
                DivergenceKind.OUTCOME_CHANGED,
                "run.status",
                str(self._run.status),
                str(replayed.status),
                f"today's code ends the run at step {number} ({describe_ending(replayed)}); "
                f"the recorded run did not end there ({self._run.status})",
            )
        if not ends:
            return Divergence(
                number + 1,
                DivergenceKind.EXTRA_STEP,
                "step",
                None,
                number + 1,
                f"today's code goes on to step {number + 1}; the recorded run ended at step "
                f"{number} ({describe_ending(self._recorded_end)})",
            )
        return compare_ending(number, self._recorded_end, replayed)

    def _missing(self, number: int, when: str) -> Divergence:
        step = self._steps[number - 1]
        what = step.tool or (
            f"failed: {step.error_code}" if step.status is StepStatus.FAILED else "no action"
        )
        return Divergence(
            number,
            DivergenceKind.MISSING_STEP,
            "step",
            number,
            None,
            f"today's code ends the run {when}; the recording goes on to step {number} ({what})",
        )
