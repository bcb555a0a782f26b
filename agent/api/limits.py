"""Request size limits, enforced before a body is read into memory.

A pure ASGI middleware, so it sees the body as the server delivers it: a declared
`Content-Length` over the limit is refused before a byte is read, and a body without one
(chunked transfer) is counted as it streams and refused the moment it crosses the limit, so the
application never holds more than the limit. Rate and concurrency limits would belong here too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.errors import PayloadTooLarge, error_response, request_id_of


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await error_response(self._error(), request_id_of(scope))(scope, receive, send)
            return

        received = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            if tripped:
                raise self._error()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # The chunk that crosses the limit is never handed on.
                    tripped = True
                    raise self._error()
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
            await error_response(self._error(), request_id_of(scope))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server has already rejected a malformed or conflicting Content-Length; a value
            # that is not plain digits here is left to the streaming count.
            return int(value) if value.isdigit() else None
    return None
