"""The decision layer: asking the model for the next action until its answer validates.

The model only decides. This module sends the context to the deployment serving the agent's
role (or the one a run is pinned to) under a JSON schema of the allowed tools, reserves and
charges the run's budgets around each call, waits out an overloaded engine, and shows an
invalid answer back to the model a bounded number of times. It records every attempt on the
step being assembled; it never runs a tool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

from agent.budgets.gate import UNLIMITED, RunBudget
from agent.decision import Action, InvalidAction, action_schema, parse_action, parse_decision
from agent.domain import JSON, AgentDefinition
from agent.ports import ChatModel, Embedder
from agent.settings import AgentSettings
from agent.tools import Tool
from agent.turns import StepDraft
from serving.errors import ModelOutputError, ModelOverloaded
from serving.types import ChatResult, Message


class ModelResolver(Protocol):
    def chat_model(self, role: str) -> ChatModel: ...
    def pinned_chat_model(self, role: str, deployment: str) -> ChatModel:
        """The one named deployment, for a run pinned to it (no fallback to another)."""
        ...

    def embedder(self) -> Embedder: ...


class Decider:
    """Decisions for the run loop, from the models `models` resolves."""

    def __init__(self, models: ModelResolver, settings: AgentSettings) -> None:
        self._models = models
        self._settings = settings

    async def _admitted_chat(
        self, model: ChatModel, conversation: list[Message], schema: JSON, max_tokens: int
    ) -> ChatResult:
        """A chat call that waits while every deployment is at its in-flight cap.

        An overloaded engine is back-pressure, not a failure of the run: the step waits for a
        slot (bounded by `overload_wait_s`) instead of failing work that was already accepted.
        """
        deadline = time.monotonic() + self._settings.overload_wait_s
        while True:
            try:
                return await model.chat(
                    conversation,
                    json_schema=schema,
                    max_tokens=max_tokens,
                )
            except ModelOverloaded as exc:
                if time.monotonic() + exc.retry_after_s > deadline:
                    raise
                await asyncio.sleep(exc.retry_after_s)

    async def decide(
        self,
        agent: AgentDefinition,
        messages: list[Message],
        tools: Mapping[str, Tool[Any]],
        draft: StepDraft,
        pinned: str | None = None,
        budget: RunBudget = UNLIMITED,
    ) -> list[Action] | None:
        """Ask for an action (or, with parallel calls, several) until the answer validates;
        None when every attempt was invalid.

        `pinned` (the run's `deployment`) sends every call to that deployment instead of routing
        by the agent's role: a fork onto another model is decided by that model or not at all.
        """
        if pinned is None:
            model = self._models.chat_model(agent.model_role)
        else:
            model = self._models.pinned_chat_model(agent.model_role, pinned)
        parallel = agent.parallel_calls
        schema = action_schema(list(tools.values()), parallel)
        # Each call's strings are bounded to fit one decision's tokens (`agent.decision`), so
        # N calls at once may need N times that; budgets reserve what the call may spend.
        max_tokens = self._settings.decision_max_tokens * parallel
        conversation = list(messages)
        for _ in range(self._settings.max_decision_attempts):
            try:
                # Reserved on the run's budgets before the call, settled with its usage after.
                spent = draft.prompt_tokens + draft.completion_tokens
                first = not draft.attempts
                async with budget.model_call(conversation, spent, first, max_tokens) as meter:
                    answer = await self._admitted_chat(model, conversation, schema, max_tokens)
                    meter.charge(answer.usage.total_tokens)
            except ModelOutputError as exc:
                draft.attempts.append(
                    {"error": exc.code, "detail": exc.message, "deployment": exc.deployment}
                )
                continue
            draft.prompt_tokens += answer.usage.prompt_tokens
            draft.completion_tokens += answer.usage.completion_tokens
            draft.model_ms += answer.latency_ms
            attempt: JSON = {
                "raw": answer.content[:4000],
                "finish_reason": answer.finish_reason,
                "model": answer.model,
                "deployment": answer.deployment,
                "latency_ms": round(answer.latency_ms, 3),
            }
            draft.attempts.append(attempt)
            try:
                if parallel > 1:
                    actions = parse_decision(answer.content, tools, parallel)
                else:
                    actions = [parse_action(answer.content, tools)]
            except InvalidAction as exc:
                attempt["error"] = exc.reason
                # Shown after the stable prefix, so a retry still hits the prefix cache.
                conversation.append({"role": "assistant", "content": answer.content[:4000]})
                conversation.append(
                    {
                        "role": "user",
                        "content": f"That answer was invalid: {exc.reason}. "
                        "Answer again with exactly one JSON object.",
                    }
                )
                continue
            draft.deployment = answer.deployment
            for admitted, action in enumerate(actions):
                await budget.admit_tool_call(action.tool, action, admitted)
            return actions
        return None
