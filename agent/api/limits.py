"""Request size limits, enforced before a body is read into memory.

A pure ASGI middleware, so it sees the body as the server delivers it: a declared
`Content-Length` over the limit is refused before a byte is read, and a body without one
(chunked transfer) is counted as it streams and refused the moment it crosses the limit, so the
application never holds more than the limit. A few paths (document uploads) may have a limit of
their own. Rate and concurrency limits would belong here too.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.errors import PayloadTooLarge, error_response, request_id_of


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(path_limits or {})
        """Limits for exact request paths, in place of `max_body_bytes`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        error = PayloadTooLarge(f"the request body is larger than {limit} bytes")
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await error_response(error, request_id_of(scope))(scope, receive, send)
            return

        received = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            if tripped:
                raise error
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The chunk that crosses the limit is never handed on.
                    tripped = True
                    raise error
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped and not started:
                # Whatever the application makes of a body cut short (FastAPI turns a failed
                # read into a 400) is dropped: the answer is the 413 sent below.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped or started:
                raise
        if tripped and not started:
            await error_response(error, request_id_of(scope))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server has already rejected a malformed or conflicting Content-Length; a value
            # that is not plain digits here is left to the streaming count.
            return int(value) if value.isdigit() else None
    return None
