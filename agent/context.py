"""Context building: what the model is shown at each step, laid out for the prefix cache.

Stable parts come first and never change within a run (instructions, tools, answer format, the
task and the passages retrieved for it); each step only appends its own action and result. A
tool result is truncated once, when it is first shown, so earlier turns are byte-identical on
every later step and vLLM's prefix cache serves them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.domain import JSON, AgentDefinition, ChunkHit, Step
from agent.tools import Tool
from serving.types import Message

CONTEXT_FORMAT = 2
"""Bumped whenever the layout changes, so a recorded prompt hash is compared like with like.
2: earlier actions and results are rendered with sorted keys."""

PASSAGE_CHARS = 1200


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk as recorded in step 1's context and shown to the model."""

    chunk_id: int
    document_id: str
    title: str
    score: float
    content: str

    @classmethod
    def from_hit(cls, hit: ChunkHit) -> Passage:
        return cls(
            chunk_id=hit.chunk_id,
            document_id=str(hit.document_id),
            title=hit.title,
            score=round(hit.score, 4),
            content=hit.content[:PASSAGE_CHARS],
        )

    def as_json(self) -> JSON:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "title": self.title,
            "score": self.score,
            "content": self.content,
        }


def system_prompt(agent: AgentDefinition, tools: Sequence[Tool[Any]]) -> str:
    lines = [
        agent.instructions.strip(),
        "",
        "You work in steps. At each step choose exactly one tool and answer with one JSON object:",
        '{"tool": "<tool name>", "arguments": {...}}',
    ]
    if agent.parallel_calls > 1:
        # Only for agents allowed parallel calls, so everyone else's prompt (and its prefix
        # cache) is unchanged.
        lines += [
            f"When several independent calls are needed now, you may instead propose up to "
            f"{agent.parallel_calls} at once (never finish):",
            '{"calls": [{"tool": "<tool name>", "arguments": {...}}, ...]}',
        ]
    lines.append("Nothing else: no prose around the JSON. Tools:")
    for tool in tools:
        schema = json.dumps(tool.arguments_schema(), sort_keys=True, separators=(",", ":"))
        lines.append(f"- {tool.name}: {tool.description} Arguments schema: {schema}")
    return "\n".join(lines)


def task_message(task: str, passages: Sequence[Passage]) -> str:
    parts = [f"Task: {task.strip()}"]
    if passages:
        parts.append("\nPassages from the organisation's documents that may help:")
        for i, p in enumerate(passages, 1):
            parts.append(f"[{i}] {p.title}\n{p.content}")
    return "\n".join(parts)


def result_message(step: Step, limit: int) -> str:
    if step.error_code is not None:
        return f"The {step.tool} call failed: {step.error_code}."
    # Sorted keys: a step read back from Postgres (JSONB reorders keys) must render exactly as
    # it did live, or a resumed run's prompt, its prefix-cache hits and replay all drift.
    body = json.dumps(step.result, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if len(body) > limit:
        body = body[:limit] + " …(truncated)"
    return f"Result of {step.tool}: {body}"


def build_messages(
    agent: AgentDefinition,
    tools: Sequence[Tool[Any]],
    task: str,
    passages: Sequence[Passage],
    history: Sequence[Step],
    *,
    result_chars: int,
) -> list[Message]:
    messages: list[Message] = [
        {"role": "system", "content": system_prompt(agent, tools)},
        {"role": "user", "content": task_message(task, passages)},
    ]
    for step in history:
        if step.tool is None:
            continue
        action = {"tool": step.tool, "arguments": step.arguments or {}}
        content = json.dumps(action, ensure_ascii=False, sort_keys=True)
        messages.append({"role": "assistant", "content": content})
        messages.append({"role": "user", "content": result_message(step, result_chars)})
    return messages


def context_record(
    messages: Sequence[Message], passages: Sequence[Passage] | None, history: Sequence[Step]
) -> JSON:
    """What gets recorded about the context: its hash and references, not a copy per step.

    The full prompt is a pure function of the agent version, the task, the passages (recorded in
    full on step 1) and the earlier steps, so it can be rebuilt and checked against the hash.
    """
    canonical = json.dumps(list(messages), ensure_ascii=False, separators=(",", ":"))
    record: JSON = {
        "format": CONTEXT_FORMAT,
        "prompt_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "prompt_chars": len(canonical),
        "messages": len(messages),
        "history_steps": [s.number for s in history],
    }
    if passages is not None:
        record["passages"] = [p.as_json() for p in passages]
    return record


def passages_from_record(record: JSON) -> list[Passage]:
    return [Passage(**p) for p in record.get("passages", [])]
