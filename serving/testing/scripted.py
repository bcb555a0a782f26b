"""A real HTTP server on loopback that answers like vLLM's OpenAI API from a script.

Tests enqueue chat answers (or errors) and read back the requests the code under test sent;
embeddings are deterministic hashed bags of words so vector search behaves sensibly. It uses
only the standard library so it can run in any test process, in a daemon thread. It is not a
model, and it is not meant to be fast beyond keeping benchmarks honest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from serving.testing.loopback import LoopbackHTTPServer, RequestHandler

_WORD = re.compile(r"\w+")
_CHAT = "/v1/chat/completions"
_EMBED = "/v1/embeddings"
_MODELS = "/v1/models"
_HEALTH = "/health"
_ROUTES = {("POST", _CHAT), ("POST", _EMBED), ("GET", _MODELS), ("GET", _HEALTH)}


def deterministic_embedding(text: str, dim: int = 384) -> list[float]:
    """A unit vector for ``text``: a signed, hashed bag of its lowercase words.

    Stable across processes (blake2b, not ``hash()``, which is salted per process), so texts
    sharing words are near in cosine distance. Text without words maps to ``e_0``.
    """
    if dim < 1:
        raise ValueError("dim must be >= 1")
    vector = [0.0] * dim
    for token in _WORD.findall(text.lower()):
        bits = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        # Low bits pick the slot, the top bit the sign: signed hashing keeps unrelated
        # collisions from adding up to a spurious similarity.
        vector[bits % dim] += -1.0 if bits >> 63 else 1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # no words, or every word cancelled out another
        vector = [0.0] * dim
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


@dataclass
class RecordedRequest:
    """One HTTP request as the scripted server received it."""

    method: str
    path: str
    """Path without the query string, e.g. ``/v1/chat/completions``."""
    body: dict[str, Any] | None
    """The parsed JSON object, or None if there was no valid JSON object."""
    headers: dict[str, str] = field(default_factory=dict)
    """Header names lowercased, e.g. ``headers["authorization"]``."""


@dataclass(frozen=True, slots=True)
class _Script:
    """One queued reply: an answer (``content`` set) or a raw error (``status``/``body``)."""

    content: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay_s: float = 0.0
    status: int = 200
    body: str = ""


class ScriptedModelServer:
    """OpenAI-compatible chat/embeddings/models endpoints answering from a queue."""

    def __init__(
        self,
        *,
        embedding_dim: int = 384,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "scripted",
    ) -> None:
        self.embedding_dim = embedding_dim
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queue: deque[_Script] = deque()
        self._responder: Callable[[dict[str, Any]], str] | None = None
        self._served = 0
        self._stopping = threading.Event()
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ScriptedModelServer:
        if self._thread is not None:
            raise RuntimeError("scripted model server already started")
        self._stopping.clear()
        self._httpd = LoopbackHTTPServer(self._address, self._handle)
        self._address = (self._address[0], self._httpd.server_address[1])
        # A short poll interval keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-model-{self._address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections, so clients see it go away."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping on a scripted delay
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._address[1] == 0:
            raise RuntimeError("scripted model server not started")
        return f"http://{self._address[0]}:{self._address[1]}/v1"

    # -- scripting ---------------------------------------------------------------------------

    def enqueue(
        self,
        content: str | Mapping[str, Any],
        *,
        finish_reason: str = "stop",
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue the next chat answer; a Mapping is sent as its JSON text."""
        text = content if isinstance(content, str) else json.dumps(content)
        with self._lock:
            self._queue.append(
                _Script(text, finish_reason, prompt_tokens, completion_tokens, delay_s)
            )

    def enqueue_error(
        self, status: int, body: str = "scripted error", *, delay_s: float = 0.0
    ) -> None:
        """Queue a raw reply to the next chat request (any status, even 200 with garbage)."""
        with self._lock:
            self._queue.append(_Script(delay_s=delay_s, status=status, body=body))

    def set_responder(self, fn: Callable[[dict[str, Any]], str] | None) -> None:
        """Answer chat requests with ``fn(request_json)`` whenever the queue is empty."""
        self._responder = fn

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received so far, oldest first."""
        with self._lock:
            recorded = list(self.requests)
        return [r.body for r in recorded if r.path == _CHAT and r.body is not None]

    # -- request handling (runs on server threads) --------------------------------------------

    def _handle(self, handler: RequestHandler, method: str) -> None:
        path = handler.path.partition("?")[0]
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            handler.close_connection = True  # we cannot find the end of a chunked body
            return handler.reply(411, _error("send a Content-Length"))
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        parsed: Any = None
        if method == "POST":
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
        body = parsed if isinstance(parsed, dict) else None
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body, headers))
        if (method, path) not in _ROUTES:
            known = any(p == path for _, p in _ROUTES)
            status = 405 if known else 404
            return handler.reply(status, _error(f"{method} {path} is not served here"))
        if method == "POST":  # the POST routes are exactly chat and embeddings
            if body is None:
                return handler.reply(400, _error("request body must be a JSON object"))
            return (self._chat if path == _CHAT else self._embeddings)(handler, body)
        if path == _MODELS:
            card = {"id": self.model, "object": "model", "created": 0, "owned_by": "garrison"}
            return handler.reply(200, {"object": "list", "data": [card]})
        return handler.reply(200, None)  # /health: vLLM answers 200 with an empty body

    def _chat(self, handler: RequestHandler, request: dict[str, Any]) -> None:
        with self._lock:
            script = self._queue.popleft() if self._queue else None
            self._served += 1
            serial = self._served
        responder = self._responder
        if script is None:
            if responder is None:
                return handler.reply(500, _error("scripted model has no queued answer"))
            try:
                script = _Script(content=responder(request))
            except Exception as exc:  # a broken responder is a test bug; show it, do not hang
                return handler.reply(500, _error(f"scripted responder failed: {exc!r}"))
        if script.delay_s > 0 and self._stopping.wait(script.delay_s):
            handler.close_connection = True
            return None
        if script.content is None:
            return handler.reply(script.status, script.body.encode())
        prompt = script.prompt_tokens
        if prompt is None:
            messages = request.get("messages")
            messages = messages if isinstance(messages, list) else []
            prompt = sum(
                len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)
            )
        completion = script.completion_tokens
        if completion is None:
            completion = len(script.content.split())
        answer = {"role": "assistant", "content": script.content}
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        return handler.reply(
            200,
            {
                "id": f"chatcmpl-scripted-{serial}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model") or self.model,
                "choices": [{"index": 0, "message": answer, "finish_reason": script.finish_reason}],
                "usage": usage,
            },
        )

    def _embeddings(self, handler: RequestHandler, request: dict[str, Any]) -> None:
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return handler.reply(400, _error("input must be a string or a list of strings"))
        rows = [
            {
                "object": "embedding",
                "index": i,
                "embedding": deterministic_embedding(t, self.embedding_dim),
            }
            for i, t in enumerate(texts)
        ]
        # Rows go out in reverse: the API promises an "index" per row, not an order, and a
        # client that trusts position must fail its tests here rather than in production.
        rows.reverse()
        words = sum(len(t.split()) for t in texts)
        return handler.reply(
            200,
            {
                "object": "list",
                "data": rows,
                "model": request.get("model") or self.model,
                "usage": {"prompt_tokens": words, "total_tokens": words},
            },
        )


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "scripted_error"}}
