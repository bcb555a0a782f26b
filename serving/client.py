"""The OpenAI-compatible wire adapter: chat, embeddings and a liveness probe over HTTP.

This module speaks the OpenAI HTTP dialect that vLLM serves and turns answers into
``serving.types`` results and failures into ``serving.errors``. It does not choose prompts,
parse actions, retry, or know which model can do what; those live with the callers.

The hot path is deliberately bare (one ``json.dumps``, one ``json.loads``, no pydantic, pooled
keep-alive connections, see ``serving.transport``): the agent loop calls it once per turn and its
overhead is budgeted at well under a millisecond (see ``bench/client_overhead.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from serving.errors import (
    BODY_EXCERPT_CHARS,
    ModelHTTPError,
    ModelOutputError,
    ModelUnavailable,
    ServingError,
)
from serving.settings import ServingSettings
from serving.transport import HttpAnswer, HttpTransport
from serving.types import ChatResult, EmbeddingResult, Message, Usage

# Gateway statuses mean the engine behind the URL is down or still loading, not that the
# request was wrong; callers treat them like a refused connection.
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
_OUTPUT_EXCERPT_CHARS = 200


class OpenAICompatibleClient:
    """Async client for one OpenAI-compatible endpoint and one served model."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        embed_batch_size: int = 64,
    ) -> None:
        if not base_url:
            raise ModelUnavailable(f"model endpoint for {model!r} is not configured")
        if timeout_s <= 0 or embed_batch_size < 1:
            raise ValueError("timeout_s must be > 0 and embed_batch_size >= 1")
        base = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self._where = display_url(base)
        self._chat_url = f"{base}/chat/completions"
        self._embed_url = f"{base}/embeddings"
        self._models_url = f"{base}/models"
        self._batch = embed_batch_size
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = HttpTransport(self._where, headers, timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, unless the caller supplied (and so owns) it."""
        await self._http.aclose()

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        """One non-streaming chat completion, optionally constrained to ``json_schema``."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages if isinstance(messages, list | tuple) else list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            }
        response, latency_ms = await self._exchange(self._chat_url, _dumps(payload))
        data = self._loads(response)
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
            finish_reason = choice.get("finish_reason") or "unknown"
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelOutputError(
                f"{self._where} answered without choices[0].message: "
                f"{_excerpt(self._redact(response.text))}"
            ) from exc
        if not isinstance(content, str) or not content:
            raise ModelOutputError(f"{self._where} answered with no text content")
        if json_schema is not None and finish_reason == "length":
            # Guided decoding only guarantees valid JSON when generation finishes; a cut-off
            # answer is an unterminated document (FACTS.md, "vLLM without a GPU").
            raise ModelOutputError(
                f"model output was cut at max_tokens={max_tokens} before the JSON was complete: "
                f"{_excerpt(content)}"
            )
        return ChatResult(
            content=content,
            finish_reason=str(finish_reason),
            usage=_usage(data),
            latency_ms=latency_ms,
            model=_model(data, self.model),
        )

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        """Embed ``texts`` in batches of ``embed_batch_size``; vectors come back in input order."""
        items = list(texts)
        vectors: list[list[float]] = []
        prompt_tokens = 0
        latency_ms = 0.0
        model = self.model
        for start in range(0, len(items), self._batch):
            batch = items[start : start + self._batch]
            body = _dumps({"model": self.model, "input": batch})
            response, elapsed_ms = await self._exchange(self._embed_url, body)
            data = self._loads(response)
            vectors.extend(self._vectors(data, len(batch), response))
            prompt_tokens += _usage(data).prompt_tokens
            latency_ms += elapsed_ms
            model = _model(data, model)
        return EmbeddingResult(
            vectors=vectors, usage=Usage(prompt_tokens, 0), latency_ms=latency_ms, model=model
        )

    async def ping(self) -> None:
        """Return if ``GET /models`` answers 2xx; raise the typed serving error otherwise."""
        await self._exchange(self._models_url, None)

    async def _exchange(self, url: str, body: bytes | None) -> tuple[HttpAnswer, float]:
        response = await self._http.request("GET" if body is None else "POST", url, body)
        if not response.ok:
            raise self._status_error(response)
        return response, response.latency_ms

    def _status_error(self, response: HttpAnswer) -> ServingError:
        text = self._redact(response.text)
        if response.status in _UNAVAILABLE_STATUSES:
            return ModelUnavailable(
                f"{self._where} answered HTTP {response.status}: {_excerpt(text)}"
            )
        return ModelHTTPError(response.status, text[:BODY_EXCERPT_CHARS])

    def _redact(self, text: str) -> str:
        # Some proxies echo request headers in error pages; never let the key reach a log.
        if self._api_key and self._api_key in text:
            return text.replace(self._api_key, "[redacted]")
        return text

    def _loads(self, response: HttpAnswer) -> Any:
        try:
            return json.loads(response.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ModelOutputError(
                f"{self._where} answered with a body that is not JSON: "
                f"{_excerpt(self._redact(response.text))}"
            ) from exc

    def _vectors(self, data: Any, expected: int, response: HttpAnswer) -> list[list[float]]:
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [row["embedding"] for row in rows]
            indexes = [row["index"] for row in rows]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelOutputError(
                f"{self._where} answered without data[].embedding: {_excerpt(response.text)}"
            ) from exc
        if indexes != list(range(expected)):
            raise ModelOutputError(
                f"{self._where} returned {len(rows)} embeddings for {expected} inputs"
                f" (indexes must be 0..{expected - 1})"
            )
        if not all(isinstance(vector, list) for vector in vectors):
            raise ModelOutputError(f"{self._where} returned embeddings that are not float lists")
        return vectors


def chat_client(settings: ServingSettings) -> OpenAICompatibleClient:
    """The chat client described by ``settings``; ModelUnavailable if no chat URL is set."""
    if settings.chat_url is None:
        raise ModelUnavailable("chat model endpoint is not configured (set GARRISON_CHAT_URL)")
    return _from_settings(settings, settings.chat_url, settings.chat_model)


def embed_client(settings: ServingSettings) -> OpenAICompatibleClient:
    """The embedding client described by ``settings``; ModelUnavailable if no embed URL is set."""
    if settings.embed_url is None:
        raise ModelUnavailable("embedding endpoint is not configured (set GARRISON_EMBED_URL)")
    return _from_settings(settings, settings.embed_url, settings.embed_model)


def _from_settings(settings: ServingSettings, url: str, model: str) -> OpenAICompatibleClient:
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    return OpenAICompatibleClient(
        url,
        model=model,
        api_key=key,
        timeout_s=settings.model_timeout_s,
        embed_batch_size=settings.embed_batch_size,
    )


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _usage(data: Any) -> Usage:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return Usage(0, 0)
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _model(data: Any, default: str) -> str:
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) and model else default


def _excerpt(text: str) -> str:
    return text if len(text) <= _OUTPUT_EXCERPT_CHARS else text[:_OUTPUT_EXCERPT_CHARS] + "..."


def display_url(url: str) -> str:
    # Drop any user:password@ part: messages end up in logs and API responses.
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"
