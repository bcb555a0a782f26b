"""The run loop: a typed state machine that takes one committed step at a time.

Each step builds the context, asks the model for the next action under a JSON schema of the
agent's allowed tools, validates it (retrying invalid output a bounded number of times), runs the
tool, and commits the step together with its effect on the run. The model only decides; every
failure becomes a recorded step and a reason code, never an exception escaping to the caller.

A turn is what one decision produces: one step, or, for an agent allowed parallel calls, one
step per proposed call (each judged by the policy on its own, so several may wait for approval
side by side). A turn commits all at once or not at all.

What is not here: asking the model until its answer validates (`agent.deciding`), and the rules
by which a turn's steps end, park or continue their run, which replay shares (`agent.turns`).
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from agent import codes
from agent.budgets.directory import BudgetDirectory
from agent.budgets.gate import UNLIMITED, BudgetExhausted, RunBudget
from agent.context import Passage, build_messages, context_record, passages_from_record
from agent.deciding import Decider, ModelResolver
from agent.decision import Action
from agent.domain import (
    JSON,
    AgentDefinition,
    OutboxEffect,
    Run,
    RunOutcome,
    RunStatus,
    Step,
    StepStatus,
)
from agent.loopdetect import LoopTracker
from agent.policy.gate import Governance, RunGate
from agent.ports import AgentStore, DocumentStore, RunStore
from agent.services.access import run_scope
from agent.services.search import MAX_K, MAX_QUERY_CHARS, SearchService
from agent.settings import AgentSettings
from agent.tools import Tool, ToolContext
from agent.turns import (
    StepDraft,
    TakenStep,
    exhausted_step,
    failed_step,
    past_step_limit,
    settle_turn,
)
from serving.errors import ServingError

log = logging.getLogger(__name__)


class RunLoop:
    def __init__(
        self,
        *,
        runs: RunStore,
        agents: AgentStore,
        documents: DocumentStore,
        models: ModelResolver,
        tools: Mapping[str, Tool[Any]],
        settings: AgentSettings,
        governance: Governance | None = None,
        budgets: BudgetDirectory | None = None,
    ) -> None:
        self._runs = runs
        self._agents = agents
        self._documents = documents
        self._models = models
        self._tools = tools
        self._settings = settings
        self._governance = governance
        # The gate of each run being driven, for `take_step` and `_retrieve` (whose signatures
        # replay shares). Weak values: an entry lives exactly as long as its `drive` call.
        self._gates: weakref.WeakValueDictionary[uuid.UUID, RunGate] = weakref.WeakValueDictionary()
        self._budgets = budgets
        self._decider = Decider(models, settings)

    def loop_tracker(self) -> LoopTracker:
        """Loop detection as configured, fed one step at a time."""
        return LoopTracker(self._settings.loop_max_repeats, self._settings.loop_stale_window)

    async def drive(
        self, run: Run, worker_id: str, should_stop: Callable[[], bool] = lambda: False
    ) -> Run:
        """Take steps until the run ends or `should_stop` says to yield at a step boundary."""
        agent = await self._agents.get_agent_by_id(run.agent_id)
        if agent is None:
            outcome = RunOutcome(
                RunStatus.FAILED, failure_code=codes.AGENT_MISSING, failure_detail="agent deleted"
            )
            return await self._runs.finish_without_step(run.id, worker_id, outcome)
        tools = [self._tools[name] for name in agent.allowed_tools if name in self._tools]
        # A fresh run has no history to read back; a resumed or forked one does.
        history = await self._runs.list_steps(run.id, None) if run.step_count else []
        passages = passages_from_record(history[0].context) if history else None
        gate = None
        if self._governance is not None:
            # Policies are read once per drive, not per step (`agent.policy.gate`).
            gate = self._gates[run.id] = await self._governance.open(run, agent, history)
            if gate.resume_due and not should_stop():
                taken = await self.take_approved_steps(run, tools, history, gate)
                kept, outcome = settle_turn(agent, taken, None)
                run = await self._record(kept, worker_id, outcome)
                for step, _outcome, effects in kept:
                    history.append(step)
                    await self._committed(gate, step, effects)
        # Budgets are resolved once per drive (cached per tenant: no query when none is set).
        budget = UNLIMITED
        if self._budgets is not None:
            budget = await self._budgets.for_run(run, agent, history)
        loops = self.loop_tracker()
        for past in history:
            loops.observe(past)
        # Only a running run takes another step: one that now awaits approval is no longer
        # this worker's (its step commit let go of the lease).
        while run.status is RunStatus.RUNNING and not should_stop():
            limit = past_step_limit(agent, run.step_count) or budget.at_boundary(run)
            if limit is not None:
                return await self._runs.finish_without_step(run.id, worker_id, limit)
            try:
                taken = await self.take_step(run, agent, tools, passages, history, budget)
            except BudgetExhausted as exc:
                # Refused before the model was asked anything: there is no step to record.
                return await self._runs.finish_without_step(run.id, worker_id, exc.outcome)
            if passages is None:
                passages = passages_from_record(taken[0][0].context)
            kept, outcome = settle_turn(agent, taken, loops)
            run = await self._record(kept, worker_id, outcome)
            for step, _outcome, effects in kept:
                budget.observe(step)
                history.append(step)
                if gate is not None:
                    await self._committed(gate, step, effects)
        return run

    async def _record(self, kept: Sequence[TakenStep], worker_id: str, outcome: RunOutcome) -> Run:
        """Commit a turn: its steps, their side effects and the run's outcome, all or nothing."""
        if len(kept) == 1:
            step, _outcome, effects = kept[0]
            return await self._runs.record_step(step, worker_id, outcome, effects)
        return await self._runs.record_steps(
            [(step, effects) for step, _outcome, effects in kept], worker_id, outcome
        )

    async def _committed(self, gate: RunGate, step: Step, effects: Sequence[OutboxEffect]) -> None:
        gate.read(step)
        try:
            await gate.audit(step, effects)
        except Exception:
            # The step is committed and is the record; a lost audit entry must not fail the run.
            log.exception("run %s step %d: audit entry not written", step.run_id, step.number)

    async def take_step(
        self,
        run: Run,
        agent: AgentDefinition,
        tools: Sequence[Tool[Any]],
        passages: Sequence[Passage] | None,
        history: Sequence[Step],
        budget: RunBudget = UNLIMITED,
    ) -> list[TakenStep]:
        """One turn, ready to commit: one step per action the model decided (one, unless the
        agent allows parallel calls), or the one step that failed to decide. `BudgetExhausted`
        escapes only when a budget refused the step's first model call (nothing was asked, so
        there is nothing to record)."""
        started = datetime.now(UTC)
        retrieval_error: str | None = None
        retrieval_tokens = 0
        first = passages is None
        if passages is None:
            passages, retrieval_tokens, retrieval_error = await self._retrieve(run, agent)
        messages = build_messages(
            agent,
            tools,
            run.input,
            passages,
            history,
            result_chars=self._settings.tool_result_chars,
        )
        context = context_record(messages, passages if first else None, history)
        if retrieval_error is not None:
            context["retrieval_error"] = retrieval_error
        draft = StepDraft(
            run_id=run.id,
            number=run.step_count + 1,
            started_at=started,
            context=context,
            # The task's embedding is model work too: every token a step spends is on the step.
            prompt_tokens=retrieval_tokens,
        )

        by_name = {t.name: t for t in tools}
        try:
            actions = await self._decider.decide(
                agent, messages, by_name, draft, run.deployment, budget
            )
        except ServingError as exc:
            return [failed_step(draft, exc.code, exc.message)]
        except BudgetExhausted as exc:
            if not draft.attempts:
                raise
            return [exhausted_step(draft, exc)]
        if actions is None:
            detail = f"no valid action after {self._settings.max_decision_attempts} attempts"
            return [failed_step(draft, codes.INVALID_MODEL_OUTPUT, detail)]
        if len(actions) == 1:
            return [await self._act(run, draft, actions[0], by_name, history)]
        room = agent.max_steps - run.step_count
        budgeted = budget.steps_left(run)
        if budgeted is not None:
            room = min(room, budgeted)
        return await self._act_in_parallel(run, max(1, room), draft, actions, by_name, history)

    async def _act_in_parallel(
        self,
        run: Run,
        room: int,
        draft: StepDraft,
        actions: Sequence[Action],
        tools: Mapping[str, Tool[Any]],
        history: Sequence[Step],
    ) -> list[TakenStep]:
        """Several calls decided at once become consecutive steps: the first carries the
        decision (prompt, answers, tokens), each names the step that decided it, and each is
        judged and run on its own, in the model's order, so one may run while another waits
        for a person. They stop at the first that ends the run; the rest are not taken, nor
        are those past the `room` that the step limit and the step budget leave."""
        if len(actions) > room:
            # Past the step limits they could not be recorded: say so rather than drop silently.
            draft.notes["calls_not_taken"] = len(actions) - room
            actions = actions[:room]
        taken: list[TakenStep] = []
        for index, action in enumerate(actions):
            part = draft
            if index:
                part = StepDraft(
                    run_id=run.id,
                    number=draft.number + index,
                    started_at=datetime.now(UTC),
                    context={"decided_at_step": draft.number},
                    deployment=draft.deployment,
                )
            part.notes["calls"] = {
                "index": index,
                "of": len(actions),
                "decided_at_step": draft.number,
            }
            done = [step for step, _outcome, _effects in taken]
            taken.append(
                await self._act(run, part, action, tools, [*history, *done], shown=draft.context)
            )
            status = taken[-1][1].status
            if status is not None and status.terminal:
                break
        return taken

    async def _act(
        self,
        run: Run,
        draft: StepDraft,
        action: Action,
        tools: Mapping[str, Tool[Any]],
        history: Sequence[Step],
        shown: JSON | None = None,
    ) -> TakenStep:
        """Judge one decided action by the policy, then run it, or record why it did not run.
        `shown` is the deciding prompt's context (the draft's own when None)."""
        gate = self._gates.get(run.id)
        if gate is not None:
            ruling = gate.rule(action, history, shown=draft.context if shown is None else shown)
            draft.notes.update(ruling.notes)
            if ruling.action is None:  # denied, or parked for a person: nothing runs
                step = draft.freeze(StepStatus.COMPLETED, action=action, result=ruling.result)
                return step, ruling.outcome, ()
        search_tags = gate.search_tags if gate is not None else ()
        return await self._run_tool(run, tools[action.tool], action, draft, search_tags)

    async def _run_tool(
        self,
        run: Run,
        tool: Tool[Any],
        action: Action,
        draft: StepDraft,
        search_tags: tuple[str, ...],
    ) -> TakenStep:
        """Run the decided (or approved) action's tool and freeze the step around its result."""
        tool_ctx = ToolContext(
            tenant_id=run.tenant_id,
            run_id=run.id,
            step_number=draft.number,
            documents=self._documents,
            embedder=self._models.embedder(),
            search_tags=search_tags,
            access_tags=run.access_tags,
        )
        t0 = time.perf_counter()
        try:
            result = await tool.run(action.args, tool_ctx)
        except ServingError as exc:
            draft.tool_ms = (time.perf_counter() - t0) * 1000
            return failed_step(draft, exc.code, exc.message, action)
        draft.tool_ms = (time.perf_counter() - t0) * 1000
        draft.prompt_tokens += result.prompt_tokens
        step = draft.freeze(StepStatus.COMPLETED, action=action, result=result.data)
        if result.final_answer is not None:
            return step, RunOutcome(RunStatus.SUCCEEDED, output=result.final_answer), result.effects
        return step, RunOutcome(), result.effects

    async def take_approved_steps(
        self, run: Run, tools: Sequence[Tool[Any]], history: Sequence[Step], gate: RunGate
    ) -> list[TakenStep]:
        """The turn after people decided on every action of the last turn that waited for them:
        one step per decision, in the order the actions were proposed. No model is asked. The
        turn commits under the same guard as any, so a worker that dies before the commit
        leaves nothing behind and the next claim takes it again: each approved action's side
        effects are queued exactly once."""
        gate.resume_due = False
        taken: list[TakenStep] = []
        for index, gated in enumerate(gate.awaiting):
            done = [step for step, _outcome, _effects in taken]
            number = run.step_count + 1 + index
            taken.append(
                await self.take_approved_step(run, tools, [*history, *done], gate, gated, number)
            )
            status = taken[-1][1].status
            if status is not None and status.terminal:
                break
        return taken

    async def take_approved_step(
        self,
        run: Run,
        tools: Sequence[Tool[Any]],
        history: Sequence[Step],
        gate: RunGate,
        gated: Step | None = None,
        number: int | None = None,
    ) -> TakenStep:
        """The step carrying out a person's decision on `gated` (by default the first action
        that waited): the approved (perhaps edited) action runs, or the refusal is recorded
        for the model."""
        gated = gated if gated is not None else gate.awaiting[0]
        draft = StepDraft(
            run_id=run.id,
            number=number if number is not None else run.step_count + 1,
            started_at=datetime.now(UTC),
            context={"approval_of_step": gated.number},
        )
        by_name = {t.name: t for t in tools}
        ruling, tool, arguments = gate.resume(gated, by_name, history)
        draft.notes.update(ruling.notes)
        action = ruling.action
        if action is None:
            draft.notes["action"] = {"tool": tool, "arguments": arguments}
            step = draft.freeze(StepStatus.COMPLETED, result=ruling.result)
            return replace(step, tool=tool, arguments=arguments), ruling.outcome, ()
        return await self._run_tool(run, by_name[action.tool], action, draft, gate.search_tags)

    async def _retrieve(
        self, run: Run, agent: AgentDefinition
    ) -> tuple[list[Passage], int, str | None]:
        """The passages shown with the task: the same hybrid search the agent's tool uses, so
        names, codes and numbers in the task find their documents before the first decision."""
        if agent.retrieval_k == 0:
            return [], 0, None
        search = SearchService(self._documents, self._models.embedder())
        gate = self._gates.get(run.id)
        scope = run_scope(run, gate.search_tags if gate is not None else ())
        try:
            found = await search.search(
                run.tenant_id,
                run.input[:MAX_QUERY_CHARS],
                k=min(agent.retrieval_k, MAX_K),
                filter=scope,
            )
        except ServingError as exc:
            # The model can still decide (and fail later if it needs search); the step records why
            # it saw no passages.
            return [], 0, exc.code
        return [Passage.from_hit(h) for h in found.result.hits], found.prompt_tokens, None
