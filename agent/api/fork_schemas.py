"""The wire format of replay and fork: `POST /v1/runs/{id}/replay` and `/v1/runs/{id}/fork`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import Field

from agent.api.schemas import Model, Request, StorableText
from agent.replay_compare import Divergence, DivergenceKind, ReplayReport


class ForkCreate(Request):
    from_step: int
    """Copy the parent's steps 1..`from_step` (0 copies none); at most the parent's committed
    step count, else 422 `fork_step_out_of_range`."""
    deployment: Annotated[StorableText, Field(min_length=1, max_length=63)] | None = None
    """Pin every decision of the fork to this deployment (see `GET /v1/models`); omitted keeps
    the parent's pin, if any. An unknown name is 422 `unknown_deployment`."""


class DivergenceOut(Model):
    step: int
    """The first step where today's code and the recording part ways."""
    kind: DivergenceKind
    """`context_changed` (another prompt), `decision_changed` (another action, number of model
    calls or validation verdict), `outcome_changed` (the step's or the run's result),
    `missing_step` (the run would end before this recorded step), `extra_step` (the run would
    go on to this step, past the recorded end)."""
    field: str
    """What differed, e.g. `context.prompt_sha256`, `action`, `model_calls`, `run.status`."""
    recorded: Any
    replayed: Any
    message: str

    @classmethod
    def from_domain(cls, d: Divergence) -> DivergenceOut:
        return cls(
            step=d.step,
            kind=d.kind,
            field=d.field,
            recorded=d.recorded,
            replayed=d.replayed,
            message=d.message,
        )


class ReplayOut(Model):
    run_id: uuid.UUID
    match: bool
    """True when today's code decides every recorded step as it was decided."""
    steps_recorded: int
    steps_matched: int
    """Steps replayed without a difference (all of them when `match`)."""
    divergence: DivergenceOut | None
    """The first difference, or null."""

    @classmethod
    def from_domain(cls, report: ReplayReport) -> ReplayOut:
        divergence = report.divergence
        return cls(
            run_id=report.run_id,
            match=report.match,
            steps_recorded=report.steps_recorded,
            steps_matched=report.steps_matched,
            divergence=None if divergence is None else DivergenceOut.from_domain(divergence),
        )
