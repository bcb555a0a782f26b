"""Results returned by the serving client: plain frozen dataclasses, no vendor schema.

Only the values callers need cross this boundary; the engine's raw JSON stays in the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

Message: TypeAlias = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the engine (zeros when it reported none)."""

    prompt_tokens: int
    """Tokens in the prompt, including any prefix-cache hits."""
    completion_tokens: int
    """Tokens generated (0 for embeddings)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One chat completion."""

    content: str
    """The assistant message text (JSON text when a schema was requested)."""
    finish_reason: str
    """Why generation stopped: "stop", "length", ... as reported by the engine."""
    usage: Usage
    """Token counts for this call."""
    latency_ms: float
    """Wall time of the HTTP exchange, request sent to response body read."""
    model: str
    """The model name the engine reported."""
    deployment: str | None = None
    """The registry deployment that answered; set by the router, None from a bare client."""


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """Embeddings for a batch of texts, in input order."""

    vectors: list[list[float]]
    """One vector per input text, ``vectors[i]`` belongs to ``texts[i]``."""
    usage: Usage
    """Token counts summed over the HTTP requests made."""
    latency_ms: float
    """Wall time of the HTTP exchanges, summed over batches."""
    model: str
    """The model name the engine reported."""
    deployment: str | None = None
    """The registry deployment that answered; set by the router, None from a bare client."""
