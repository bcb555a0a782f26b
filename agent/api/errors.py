"""The one place where an exception becomes an HTTP response.

Every error body has the same shape, `{"error": {"code", "message", "request_id", "details"?}}`,
and every status is chosen in `problem_for` below: routes, dependencies and middleware raise
domain or infrastructure errors and never build error JSON themselves. Errors the HTTP layer
alone can raise (`PayloadTooLarge`, `NotReady`) are declared here too. What a client sees for
an infrastructure failure is deliberately generic; the detail goes to the log with the request
id, so an operator can find it and a caller learns nothing about the internals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from agent.api.schemas import ErrorBody, ErrorDetail, ErrorResponse
from agent.errors import AgentError, CallerError, Conflict, Forbidden, NotFound, Unauthorized
from datastore.errors import DatabaseUnavailable, DatastoreError
from serving.errors import ModelOverloaded, ModelTimeout, ModelUnavailable, ServingError

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "request_id"
"""Key under `scope["state"]` where the request-id middleware leaves the request's id."""
RETRY_AFTER_S = "5"
"""Seconds a client should wait before retrying a request that failed for want of a dependency."""
MAX_DETAILS = 20
MAX_DETAIL_CHARS = 200
MAX_LOC_PARTS = 16


class ApiError(Exception):
    """An error only the HTTP layer raises; it knows its own status."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    retryable: ClassVar[bool] = False
    """Whether the same request may succeed later (answered with Retry-After)."""

    def __init__(
        self, message: str, details: Sequence[ErrorDetail] = (), *, internal: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.internal = internal
        """What the log gets and the client does not, e.g. why a component is down."""


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class NotReady(ApiError):
    """A dependency (database, a model endpoint) is down; `details` names each component."""

    status = 503
    code = "not_ready"
    retryable = True


@dataclass(frozen=True, slots=True)
class Problem:
    """What a client is told about a failure, before it is rendered as JSON."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    details: list[ErrorDetail] | None = None


_RETRY = {"Retry-After": RETRY_AFTER_S}


def problem_for(exc: Exception) -> Problem:
    """Map any exception to its status and code. Order matters: subclasses come first."""
    match exc:
        case Unauthorized():
            return Problem(401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"})
        case NotFound():
            return Problem(404, exc.code, exc.message)
        case Forbidden():
            return Problem(403, exc.code, exc.message)
        case Conflict():  # IllegalTransition included, with its own code
            return Problem(409, exc.code, exc.message)
        case CallerError():
            return Problem(422, exc.code, exc.message)
        case RequestValidationError():
            details = [_validation_detail(e) for e in exc.errors()[:MAX_DETAILS]]
            return Problem(422, "invalid_request", "the request is not valid", details=details)
        case ApiError():
            headers = dict(_RETRY) if exc.retryable else {}
            return Problem(exc.status, exc.code, exc.message, headers, exc.details or None)
        case StarletteHTTPException():
            return _starlette_problem(exc)
        case DatabaseUnavailable():
            return Problem(503, exc.code, "the database is unavailable; retry later", dict(_RETRY))
        case ModelOverloaded():
            # Back-pressure, not an outage: the wait is the router's estimate, not a constant.
            retry = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            return Problem(503, exc.code, "the models are busy; retry shortly", retry)
        case ModelUnavailable() | ModelTimeout():
            message = "a model endpoint is unavailable or too slow; retry later"
            return Problem(503, exc.code, message, dict(_RETRY))
        case ServingError():
            return Problem(502, exc.code, "a model endpoint answered with an error")
        case _:
            return Problem(500, "internal_error", "an internal error occurred")


def error_response(exc: Exception, request_id: str) -> JSONResponse:
    """Render `exc` for the client and log what the client is not told."""
    problem = problem_for(exc)
    if problem.status == 500:
        # The traceback goes to the log only: exception text can hold SQL, paths or secrets.
        log.error("request %s failed", request_id, exc_info=exc)
    elif problem.status >= 500:
        detail = getattr(exc, "internal", None) or getattr(exc, "message", None) or str(exc)
        log.warning("request %s: %s (%s)", request_id, problem.code, detail)
    body = ErrorResponse(
        error=ErrorBody(
            code=problem.code,
            message=problem.message,
            request_id=request_id,
            details=problem.details,
        )
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=problem.headers,
    )


def request_id_of(scope: Scope) -> str:
    state: dict[str, Any] = scope.get("state") or {}
    return str(state.get(REQUEST_ID_KEY, "-"))


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc, request_id_of(request.scope))


def install_error_handlers(app: FastAPI) -> None:
    """Route every expected error family through `error_response`.

    Unexpected exceptions are not registered here: Starlette would hand them to its outermost
    middleware, outside the request-id middleware, and re-raise them after answering. The
    request-id middleware catches them instead and calls `error_response` itself.
    """
    for family in (
        AgentError,
        DatastoreError,
        ServingError,
        ApiError,
        RequestValidationError,
        StarletteHTTPException,
    ):
        app.add_exception_handler(family, _handle)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status documented with the error schema."""
    return {status: _DOCUMENTED[status] for status in statuses}


def _doc(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        entry["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return entry


_DOCUMENTED: dict[int, dict[str, Any]] = {
    401: _doc(
        "`unauthorized`: missing, malformed, unknown or revoked API key.",
        {"WWW-Authenticate": "Always `Bearer`."},
    ),
    403: _doc("`forbidden`: the key may not do this."),
    404: _doc("`not_found`: no such object for this tenant."),
    409: _doc("`conflict` or `illegal_transition`."),
    413: _doc("`payload_too_large`: the request body exceeds the configured limit."),
    422: _doc("`invalid_request` (with `details`) or another caller-error code."),
    500: _doc("`internal_error`: a bug; the request id leads to it in the server log."),
    502: _doc("`model_http_error` or `model_output_invalid`: a model endpoint misbehaved."),
    503: _doc(
        "`database_unavailable`, `model_unavailable`, `model_timeout`, `model_overloaded` or "
        "`not_ready`.",
        {"Retry-After": "Seconds to wait before retrying."},
    ),
}


def _validation_detail(error: Any) -> ErrorDetail:
    # Only where and what: pydantic's `input` would echo arbitrarily large caller data back.
    loc: list[str | int] = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
    if len(loc) > MAX_LOC_PARTS:  # deeply nested input makes a path as long as the input
        loc = [*loc[:MAX_LOC_PARTS], "..."]
    msg = str(error.get("msg", "invalid value"))
    if error.get("type") == "json_invalid":
        msg = f"malformed JSON: {error.get('ctx', {}).get('error', 'cannot be parsed')}"
    return ErrorDetail(loc=loc, msg=msg[:MAX_DETAIL_CHARS])


def _starlette_problem(exc: StarletteHTTPException) -> Problem:
    if exc.status_code == 400:
        # FastAPI's only 400 is a body it could not read as JSON (invalid UTF-8, numbers
        # Python refuses to parse): malformed JSON, which is a 422 like any other.
        return Problem(422, "invalid_request", "the request body is not valid JSON")
    if exc.status_code == 405:
        # Keep only the header Starlette sets on purpose; nothing else is echoed.
        allow = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return Problem(405, "method_not_allowed", "this method is not allowed here", allow)
    if exc.status_code == 404:
        return Problem(404, "not_found", "no such route")
    status = exc.status_code if 400 <= exc.status_code < 500 else 500
    return Problem(status, "http_error", "the request cannot be served")
