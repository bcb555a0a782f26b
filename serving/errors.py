"""The serving error hierarchy: one root, one subclass per way a model call can fail.

Each class carries a stable ``code`` that the HTTP layer maps to a status in one place; the
``message`` is for humans and never contains credentials. Classes are split by blame: the
endpoint being down (``ModelUnavailable``), too slow (``ModelTimeout``), refusing the request
(``ModelHTTPError``) or answering something unusable (``ModelOutputError``); the router adds
"every deployment is at its in-flight cap" (``ModelOverloaded``), and loading a models file adds
``ModelsFileError`` (the operator's configuration is wrong).
"""

from __future__ import annotations

from typing import ClassVar

BODY_EXCERPT_CHARS = 500
"""How much of an error response body is kept: enough to diagnose, small enough to log."""


class ServingError(Exception):
    """Root of every error raised by the serving package."""

    code: ClassVar[str] = "serving_error"
    deployment: str | None = None
    """The deployment that raised it, when the router knows (set on errors it passes through)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ModelUnavailable(ServingError):
    """The endpoint is not configured, unreachable, or the engine says it is not serving."""

    code: ClassVar[str] = "model_unavailable"


class ModelTimeout(ServingError):
    """The call's deadline passed before the engine answered."""

    code: ClassVar[str] = "model_timeout"


class ModelHTTPError(ServingError):
    """The engine answered with a non-2xx status that does not mean "unavailable"."""

    code: ClassVar[str] = "model_http_error"

    def __init__(self, status_code: int, body_excerpt: str, message: str | None = None) -> None:
        body_excerpt = body_excerpt[:BODY_EXCERPT_CHARS]
        super().__init__(message or f"model endpoint answered HTTP {status_code}: {body_excerpt}")
        self.status_code = status_code
        self.body_excerpt = body_excerpt

    def __reduce__(self) -> tuple[type[ModelHTTPError], tuple[int, str, str]]:
        # Exception pickling replays ``self.args`` (only the message here) into ``__init__``;
        # rebuild from the real constructor arguments so the error survives a process boundary.
        return (type(self), (self.status_code, self.body_excerpt, self.message))


class ModelOutputError(ServingError):
    """The engine answered 2xx but the body is unusable: not JSON, no choices, no content,
    or cut off at ``max_tokens`` while a JSON schema was requested."""

    code: ClassVar[str] = "model_output_invalid"


class ModelOverloaded(ServingError):
    """Every deployment that could serve the call is at its in-flight cap: the caller should
    retry after ``retry_after_s`` instead of queueing behind an engine that is already busy."""

    code: ClassVar[str] = "model_overloaded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[ModelOverloaded], tuple[str, float]]:
        return (type(self), (self.message, self.retry_after_s))


class ModelsFileError(ServingError):
    """The models file cannot be read or is invalid. The message names the file, the line and
    the deployment, so the operator can go straight to the mistake."""

    code: ClassVar[str] = "invalid_models_file"

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        """The first offending line (1-based), when the problem has one."""

    def __reduce__(self) -> tuple[type[ModelsFileError], tuple[str, int | None]]:
        return (type(self), (self.message, self.line))
