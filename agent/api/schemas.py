"""The API's wire format: request and response models, and their mapping from domain types.

These are the public contract and change only compatibly; domain types (`agent.domain`) are free
to change underneath. Requests forbid unknown fields, so a typo is a 422 instead of a silently
ignored option, and reject text Postgres cannot store (NUL characters, lone surrogates,
non-finite numbers in metadata) so such input is a 422 and never a 500.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from agent.domain import Run, RunStatus, Step, StepStatus

RUNS_PATH = "/v1/runs"


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _storable_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    # Iterative, not recursive: nesting depth is the caller's choice, the stack's size is not.
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                _storable(key)
                pending.append(inner)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            _storable(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite")
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
"""A string Postgres can store as `text`; length limits are set per field."""
StorableObject = Annotated[dict[str, JsonValue], AfterValidator(_storable_json)]
"""A JSON object Postgres can store as `jsonb`."""


class Model(BaseModel):
    # Attribute docstrings become field descriptions in the OpenAPI document.
    model_config = ConfigDict(use_attribute_docstrings=True)


class Request(Model):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(Model):
    loc: list[str | int]
    """Where: e.g. `["body", "input"]`, or a component name for `not_ready`."""
    msg: str
    """What is wrong there, never the offending value itself."""


class ErrorBody(Model):
    code: str
    """Stable and machine-matchable, e.g. `not_found`, `database_unavailable`."""
    message: str
    request_id: str
    """Also in the `X-Request-ID` header; quote it when reporting a problem."""
    details: list[ErrorDetail] | None = None


class ErrorResponse(Model):
    error: ErrorBody


# -- runs ----------------------------------------------------------------------------------------


class RunCreate(Request):
    agent: StorableText = Field(min_length=1, max_length=64)
    """The name of one of the tenant's agents, e.g. `assistant`."""
    input: StorableText = Field(min_length=1, max_length=20_000)
    """The task, in plain language."""


class RunLinks(Model):
    self_: str = Field(serialization_alias="self")
    steps: str

    @classmethod
    def for_run(cls, run_id: uuid.UUID) -> RunLinks:
        return cls(self_=f"{RUNS_PATH}/{run_id}", steps=f"{RUNS_PATH}/{run_id}/steps")


class RunSummary(Model):
    id: uuid.UUID
    status: RunStatus
    """`queued`, `running`, `awaiting_approval` and `parked` may still change; `succeeded`,
    `failed`, `cancelled` and `budget_exhausted` are final. `parked`: its workers kept dying;
    an operator resumes or cancels it."""
    agent: str
    created_at: datetime
    idempotency_key: str | None = None
    """The `Idempotency-Key` the run was submitted with, if any."""
    links: RunLinks

    @classmethod
    def from_domain(cls, run: Run) -> RunSummary:
        return cls(
            id=run.id,
            status=run.status,
            agent=run.agent_name,
            created_at=run.created_at,
            idempotency_key=run.idempotency_key,
            links=RunLinks.for_run(run.id),
        )


class RunFailure(Model):
    code: str
    detail: str | None


class Usage(Model):
    prompt_tokens: int
    completion_tokens: int


class RunDetail(RunSummary):
    input: str
    output: str | None
    failure: RunFailure | None
    """Why the run did not succeed (`cancelled`, `worker_lost` when parked, ...), else null."""
    step_count: int
    attempts: int
    """Times a worker claimed the run without handing it back cleanly; `parked` past the
    appliance's limit."""
    usage: Usage
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    """When a cancel was asked for; a running run ends `cancelled` after its current step."""
    parent_run_id: uuid.UUID | None
    """The run this one was forked from."""
    forked_from_step: int | None
    """Steps 1..N were copied from the parent run; the rest ran live."""
    deployment: str | None
    """The model deployment every decision of this run is pinned to; null routes by role."""

    @classmethod
    def from_domain(cls, run: Run) -> RunDetail:
        failure = None
        if run.failure_code is not None:
            failure = RunFailure(code=run.failure_code, detail=run.failure_detail)
        return cls(
            id=run.id,
            status=run.status,
            agent=run.agent_name,
            created_at=run.created_at,
            idempotency_key=run.idempotency_key,
            links=RunLinks.for_run(run.id),
            input=run.input,
            output=run.output,
            failure=failure,
            step_count=run.step_count,
            attempts=run.attempts,
            usage=Usage(prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens),
            started_at=run.started_at,
            finished_at=run.finished_at,
            cancel_requested_at=run.cancel_requested_at,
            parent_run_id=run.parent_run_id,
            forked_from_step=run.forked_from_step,
            deployment=run.deployment,
        )


class RunList(Model):
    data: list[RunSummary]


class StepTimings(Model):
    model_ms: float
    tool_ms: float
    started_at: datetime
    finished_at: datetime


class StepOut(Model):
    number: int
    status: StepStatus
    context: dict[str, Any]
    decision: dict[str, Any]
    tool: str | None
    arguments: dict[str, Any] | None
    result: dict[str, Any] | None
    error_code: str | None
    usage: Usage
    timings: StepTimings

    @classmethod
    def from_domain(cls, step: Step) -> StepOut:
        return cls(
            number=step.number,
            status=step.status,
            context=step.context,
            decision=step.decision,
            tool=step.tool,
            arguments=step.arguments,
            result=step.result,
            error_code=step.error_code,
            usage=Usage(prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens),
            timings=StepTimings(
                model_ms=step.model_ms,
                tool_ms=step.tool_ms,
                started_at=step.started_at,
                finished_at=step.finished_at,
            ),
        )


class StepList(Model):
    data: list[StepOut]


# -- health ------------------------------------------------------------------------------------


class Liveness(Model):
    status: str = "ok"


class ComponentStatus(Model):
    name: str
    status: str
    """`ok` or `unavailable`; why is logged, not shown, since this route needs no key."""


class Readiness(Model):
    status: str = "ready"
    components: list[ComponentStatus]
