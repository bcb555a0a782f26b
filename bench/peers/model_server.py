"""A scripted OpenAI-compatible chat server for the durable-overhead benchmark: real HTTP on
loopback, instant and deterministic answers, standard library only.

Every framework in the benchmark talks to this one server, so the model's share of a turn is the
same for all of them. The task's first user message carries ``turns=N``; the number of assistant
messages already in the conversation is the number of turns done. Until the last turn the model
calls the ``noop`` tool once; on turn N it finishes. Two answer shapes, picked by the request:

- with ``tools`` (LangGraph, DBOS, pydantic-ai, OpenAI Agents SDK): an OpenAI ``tool_calls``
  message calling ``noop`` with ``{"note": "turn k"}``, then a plain text answer ``done``;
- without (Garrison, which asks for a JSON-schema decision): JSON content
  ``{"tool": "noop", "arguments": {...}}``, then ``{"tool": "finish", ...}``.

One asyncio thread serves every connection (HTTP/1.1 keep-alive, Content-Length bodies only), so
a thousand concurrent clients cost a thousand sockets, not a thousand threads.

    python -m bench.peers.model_server [--port 0]

prints ``listening <base url>`` once it accepts connections and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from typing import Any

_TURNS = re.compile(r"turns=(\d+)")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}
MODEL = "scripted-tools"


class ScriptError(ValueError):
    """The request cannot be answered from the script (a benchmark bug, shown as HTTP 400)."""


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def script(request: dict[str, Any]) -> dict[str, Any]:
    """The assistant message answering ``request``, with its finish reason under ``_finish``."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise ScriptError("messages must be a list")
    wanted = None
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            found = _TURNS.search(_text(message.get("content")))
            if found:
                wanted = int(found.group(1))
                break
    if wanted is None:
        raise ScriptError("no user message says turns=N")
    done = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    turn = done + 1
    last = turn >= wanted
    if request.get("tools"):
        names = {t.get("function", {}).get("name") for t in request["tools"] if isinstance(t, dict)}
        if "noop" not in names:
            raise ScriptError(f"the request offers no noop tool (tools: {sorted(map(str, names))})")
        if last:
            return {"role": "assistant", "content": "done", "_finish": "stop"}
        call = {
            "id": f"call_{turn}",
            "type": "function",
            "function": {"name": "noop", "arguments": json.dumps({"note": f"turn {turn}"})},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call], "_finish": "tool_calls"}
    if last:
        decision: dict[str, Any] = {"tool": "finish", "arguments": {"answer": "done"}}
    else:
        decision = {"tool": "noop", "arguments": {"note": f"turn {turn}"}}
    return {"role": "assistant", "content": json.dumps(decision), "_finish": "stop"}


class ModelServer:
    def __init__(self) -> None:
        self.served = 0

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any] | None]:
        if method == "GET" and path == "/v1/models":
            card = {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}
            return 200, {"object": "list", "data": [card]}
        if method == "GET" and path == "/health":
            return 200, None
        if method != "POST" or path != "/v1/chat/completions":
            return 404, _error(f"{method} {path} is not served here")
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ScriptError("the body must be a JSON object")
            message = script(request)
        except (ValueError, ScriptError) as exc:
            return 400, _error(str(exc))
        self.served += 1
        finish = message.pop("_finish")
        # Token counts are rough (bytes / 4): some clients insist on a usage block, nobody here
        # reads it for anything but bookkeeping.
        prompt = len(body) // 4
        completion = 8
        return 200, {
            "id": f"chatcmpl-bench-{self.served}",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model") or MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await _reply(writer, 411, _error("send a Content-Length"), close=True)
                    return
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, payload = self.answer(method, target.partition("?")[0], body)
                close = headers.get("connection", "").lower() == "close"
                await _reply(writer, status, payload, close=close)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return  # a client that goes away mid-request is not the server's problem
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _reply(
    writer: asyncio.StreamWriter, status: int, payload: dict[str, Any] | None, *, close: bool
) -> None:
    data = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + data)
    await writer.drain()


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "bench_script_error"}}


async def serve(port: int) -> None:
    server = ModelServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=4096)
    bound = listener.sockets[0].getsockname()[1]
    print(f"listening http://127.0.0.1:{bound}/v1", flush=True)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
