"""What a tool is: a name, a description, a typed argument model and one async `run`.

Tools are single-purpose and never see the model exchange; the loop validates arguments against
`arguments` before `run` is called, so a tool only ever receives well-formed input.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from agent.domain import JSON, OutboxEffect
from agent.ports import DocumentStore, Embedder


class ToolArguments(BaseModel):
    # Unknown keys are an invalid decision, not something to ignore silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=ToolArguments)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may touch, already scoped to the run's tenant."""

    tenant_id: uuid.UUID
    run_id: uuid.UUID
    step_number: int
    documents: DocumentStore
    embedder: Embedder
    search_tags: tuple[str, ...] = ()
    """A policy's data scope: searches see only documents carrying one of these tags (empty:
    no restriction). Tools that search must apply it."""
    access_tags: tuple[str, ...] | None = None
    """The run's access scope, the submitting key's tags (None: the whole tenant; `()`:
    nothing). Required on top of `search_tags`, never instead: tools that search must apply
    both (`SearchFilter.access_tags`)."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    data: JSON
    """Recorded on the step in full, and shown to the model (truncated) in later turns."""
    final_answer: str | None = None
    """Set only by `finish`: the run ends successfully with this answer."""
    prompt_tokens: int = 0
    """Model tokens the tool itself spent (the embedding of a search query)."""
    effects: tuple[OutboxEffect, ...] = ()
    """Side effects to deliver once the step commits; a tool never performs one itself."""


class Tool(ABC, Generic[ArgsT]):
    name: ClassVar[str]
    description: ClassVar[str]
    arguments: type[ArgsT]

    def arguments_schema(self) -> dict[str, Any]:
        # Generating a JSON schema costs ~0.5 ms; the loop asks for it on every step.
        return _schema_of(self.arguments)

    def validate(self, raw: Any) -> ArgsT:
        return self.arguments.model_validate(raw)

    @abstractmethod
    async def run(self, args: ArgsT, ctx: ToolContext) -> ToolResult: ...


@cache
def _schema_of(model: type[ToolArguments]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema
