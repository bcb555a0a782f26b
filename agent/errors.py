"""The agent package's errors: one root, split by blame, each with a stable `code`.

HTTP statuses are assigned in exactly one place (`agent.api.errors`); nothing here knows HTTP.
Run failure reasons (why a run ended `failed`) are codes in `agent.codes`, not exceptions.
"""

from __future__ import annotations

from typing import ClassVar


class AgentError(Exception):
    """Root of every error the agent domain raises on purpose."""

    code: ClassVar[str] = "agent_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CallerError(AgentError):
    """The caller asked for something wrong; retrying the same request will not help."""

    code = "invalid_request"


class NotFound(CallerError):
    """The object does not exist *for this tenant*; another tenant's object is also not found."""

    code = "not_found"


class Unauthorized(CallerError):
    code = "unauthorized"


class Forbidden(CallerError):
    code = "forbidden"


class Conflict(CallerError):
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ConfigurationError(AgentError):
    """The appliance is configured in a way that cannot work (a missing endpoint, a bad value)."""

    code = "configuration_error"


class LeaseLost(AgentError):
    """Another worker owns the run now: this worker must stop touching it at once."""

    code = "lease_lost"
