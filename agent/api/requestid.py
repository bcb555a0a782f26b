"""The outermost middleware: a request id for every request, and the last line of defence.

Each request gets an id (the caller's `X-Request-ID` if it is a sane short token, a fresh one
otherwise), kept in `scope["state"]` for error bodies and logs and echoed in the response
header. Any exception nothing else handled ends here and becomes a 500 through
`agent.api.errors`, so a bug answers with the error schema and the request id, never with a
traceback. Nothing else belongs here.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.errors import REQUEST_ID_KEY, error_response

log = logging.getLogger(__name__)

HEADER = "X-Request-ID"
# Letters, digits and a few separators, short: a caller's id ends up in our logs verbatim, so
# anything that could forge a log line or carry a payload is replaced, not escaped.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def choose_request_id(incoming: str | None) -> str:
    if incoming is not None and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = choose_request_id(incoming)
        scope.setdefault("state", {})[REQUEST_ID_KEY] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                # Half a response is on the wire; the server can only drop the connection.
                log.error("request %s failed after its response started", request_id)
                raise
            await error_response(exc, request_id)(scope, receive, send_with_id)
