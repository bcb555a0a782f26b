"""What replay puts in place of the world: a run's recorded model answers and tool results.

Replay drives today's `RunLoop.take_step` unchanged; only its collaborators are swapped for
these stand-ins, which answer from one recorded step and never reach a model, an embedder, the
documents or an outbox. Each stand-in also notices when today's code asks for something the
recording cannot answer (one model call more than recorded, a tool call the recorded step did
not make) and stops the step with a `ReplayStopped` exception, which is deliberately not a
`ServingError`: the loop must not turn it into a recorded failure.

Comparing what today's code did with what was recorded is `agent.replay_compare`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent import codes
from agent.domain import JSON, Step, StepStatus
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult
from serving.errors import (
    ModelHTTPError,
    ModelOutputError,
    ModelOverloaded,
    ModelTimeout,
    ModelUnavailable,
    ServingError,
)
from serving.types import ChatResult, EmbeddingResult, Message, Usage

_BY_CODE: dict[str, type[ServingError]] = {
    cls.code: cls for cls in (ModelUnavailable, ModelTimeout, ModelOutputError)
}


def serving_error(code: str, message: str, deployment: str | None = None) -> ServingError:
    """The serving error a recorded code stands for, raised again as the same class, so today's
    code meets it exactly as it met the original (an overload is waited on, a timeout fails)."""
    error: ServingError
    if code == ModelHTTPError.code:
        error = ModelHTTPError(0, "", message)
    elif code == ModelOverloaded.code:
        # An infinite wait hint: the loop's bounded wait gives up at once, as it did when the
        # step was recorded (otherwise the overload would have been waited out, not recorded).
        error = ModelOverloaded(message, math.inf)
    elif code in _BY_CODE:
        error = _BY_CODE[code](message)
    else:
        # A code this version does not know (recorded by a newer one): still a serving error
        # carrying that exact code.
        error = type("RecordedServingError", (ServingError,), {"code": code})(message)
    error.deployment = deployment
    return error


class ReplayStopped(Exception):
    """Today's code asked for something the recording cannot answer; the step stops here."""

    def __init__(self, field: str, recorded: Any, replayed: Any, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.recorded = recorded
        self.replayed = replayed
        self.message = message


def recorded_action(step: Step) -> JSON | None:
    action: JSON | None = step.decision.get("action")
    return action


def _decision_error(step: Step) -> str | None:
    """The serving error that ended the step's decision, if one did: those are not among the
    recorded attempts (only invalid output is), so they come after the last attempt."""
    if step.status is not StepStatus.FAILED or recorded_action(step) is not None:
        return None
    if step.error_code in (None, codes.INVALID_MODEL_OUTPUT):
        return None
    return step.error_code


def recorded_calls(step: Step) -> int:
    """How many times the model was called at this step when it was recorded."""
    return len(step.decision.get("attempts", [])) + (_decision_error(step) is not None)


def _detail(step: Step) -> str:
    result = step.result or {}
    return str(result.get("error") or step.error_code or "recorded failure")


@dataclass
class RecordedChat:
    """A `ChatModel` answering one step's calls with its recorded attempts, in order."""

    step: Step
    calls: int = 0
    first_messages: list[Message] | None = None
    """What the first call was shown: today's prompt, even when the step stops half-way."""

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        if self.first_messages is None:
            # A copy: the loop appends retry messages to the list it passed.
            self.first_messages = [dict(m) for m in messages]
        index = self.calls
        self.calls += 1
        attempts: list[JSON] = self.step.decision.get("attempts", [])
        if index < len(attempts):
            attempt = attempts[index]
            if "raw" not in attempt:  # the call itself failed (unusable output)
                raise serving_error(
                    str(attempt.get("error")),
                    str(attempt.get("detail", "")),
                    attempt.get("deployment"),
                )
            return ChatResult(
                content=attempt["raw"],
                finish_reason=str(attempt.get("finish_reason", "stop")),
                # Per-attempt usage is not recorded (only the step's totals); replay compares
                # decisions, not token counts.
                usage=Usage(0, 0),
                latency_ms=float(attempt.get("latency_ms", 0.0)),
                model=str(attempt.get("model", "")),
                deployment=attempt.get("deployment"),
            )
        error_code = _decision_error(self.step)
        if index == len(attempts) and error_code is not None:
            raise serving_error(error_code, _detail(self.step))
        raise ReplayStopped(
            "model_calls",
            recorded_calls(self.step),
            self.calls,
            f"today's code asks the model more often than recorded ({self.calls} calls, "
            f"{recorded_calls(self.step)} recorded)",
        )


@dataclass
class RecordedTools:
    """The recorded result of each step's tool call, by step number."""

    steps: Mapping[int, Step]
    final_answer: Mapping[int, str] = field(default_factory=dict)
    """The output of a run that a step ended successfully, by step number (`finish`'s answer)."""

    def result(self, step_number: int, tool: str, arguments: JSON) -> ToolResult:
        recorded = self.steps.get(step_number)
        action = recorded_action(recorded) if recorded is not None else None
        replayed = {"tool": tool, "arguments": arguments}
        if recorded is None or action is None or action != replayed:
            raise ReplayStopped(
                "action",
                action,
                replayed,
                "today's code chooses a different action than the one recorded",
            )
        if recorded.status is StepStatus.FAILED:  # the tool failed with a serving error
            raise serving_error(recorded.error_code or "serving_error", _detail(recorded))
        return ToolResult(
            data=dict(recorded.result or {}), final_answer=self.final_answer.get(step_number)
        )


class RecordedTool(Tool[ToolArguments]):
    """Stands in for one of today's tools: the same name, description and argument schema (so
    the prompt and validation are today's), but `run` returns the recorded result. Nothing is
    executed and no side effect is produced."""

    name = "recorded"
    description = "recorded"

    def __init__(self, real: Tool[Any], recorded: RecordedTools) -> None:
        self._real = real
        self._recorded = recorded
        self.arguments = real.arguments

    def arguments_schema(self) -> dict[str, Any]:
        return self._real.arguments_schema()

    def validate(self, raw: Any) -> ToolArguments:
        validated: ToolArguments = self._real.validate(raw)
        return validated

    async def run(self, args: ToolArguments, ctx: ToolContext) -> ToolResult:
        return self._recorded.result(ctx.step_number, self.name, args.model_dump(mode="json"))


def recorded_tool(real: Tool[Any], recorded: RecordedTools) -> Tool[Any]:
    """A `RecordedTool` named and described like `real` (class attributes on `Tool`)."""
    cls = type(
        f"Recorded{type(real).__name__}",
        (RecordedTool,),
        {"name": real.name, "description": real.description},
    )
    tool: Tool[Any] = cls(real, recorded)
    return tool


class NoEmbedder:
    """The embedder a replay hands tools: it refuses, since replay never reaches a model."""

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        raise ReplayStopped(
            "embedding", None, len(texts), "today's code embeds text, which replay cannot answer"
        )


@dataclass
class RecordedModels:
    """The `ModelResolver` of a replay: whatever role or pin is asked for, the current step's
    recorded answers."""

    current: RecordedChat | None = None

    def chat_model(self, role: str) -> RecordedChat:
        if self.current is None:
            raise RuntimeError("no recorded step is being replayed")
        return self.current

    def pinned_chat_model(self, role: str, deployment: str) -> RecordedChat:
        return self.chat_model(role)

    def embedder(self) -> NoEmbedder:
        return NoEmbedder()
