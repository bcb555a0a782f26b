"""How the CLI names a failure: a stable code, a message for people, and an exit code.

This is the CLI's one mapping from exceptions to exit codes, the counterpart of the API's single
error-to-HTTP mapping. Exit codes follow the blame split of the error hierarchies:

* 1 — the caller asked for something wrong (`not_found`, `invalid_request`, ...);
* 2 — the command line or its configuration is wrong (`usage`, `invalid_configuration`,
  `invalid_models_file`);
* 3 — infrastructure is missing or broken (`database_unavailable`, `model_unavailable`, ...).

Only errors raised on purpose are classified; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.errors import AgentError, CallerError, ConfigurationError
from datastore.errors import DatabaseUnavailable, DatastoreError
from serving.errors import ModelsFileError, ServingError

CALLER: Final = 1
USAGE: Final = 2
INFRASTRUCTURE: Final = 3


class CliError(Exception):
    """A failure the CLI itself detects: a port in use, a refused confirmation, a bad file."""

    def __init__(self, code: str, message: str, exit_code: int = CALLER) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    exit_code: int


EXPECTED: Final = (CliError, AgentError, DatastoreError, ServingError)
"""The exception roots `classify` understands; everything else is a bug."""


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, CliError):
        return Failure(exc.code, exc.message, exc.exit_code)
    if isinstance(exc, CallerError):
        return Failure(exc.code, exc.message, CALLER)
    if isinstance(exc, ConfigurationError | ModelsFileError):
        return Failure(exc.code, exc.message, USAGE)
    if isinstance(exc, DatabaseUnavailable):
        # The translated message is generic ("the database is unreachable"); the driver's own
        # first line says *why* (no such database, refused, authentication failed).
        return Failure(exc.code, _with_cause(exc.message, exc), INFRASTRUCTURE)
    if isinstance(exc, AgentError | DatastoreError | ServingError):
        return Failure(exc.code, exc.message, INFRASTRUCTURE)
    raise TypeError(f"not an expected error: {exc!r}") from exc


def _with_cause(message: str, exc: BaseException) -> str:
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if root is exc:
        return message
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    # The driver's text names the server it tried and what it said ('Connection refused',
    # 'database "x" does not exist'); it never contains the password.
    reason = "; ".join(lines).removeprefix("connection failed: ") or type(root).__name__
    return f"{message}: {reason}"
