"""Errors of governed actions, by blame. All are caller errors with stable codes; the API maps
them by their base class (`agent.api.errors`), the CLI by `ops.errors`."""

from __future__ import annotations

from agent.errors import CallerError, Conflict


class InvalidPolicy(CallerError):
    """A policy file that does not parse or validate; the message names each line."""

    code = "invalid_policy"

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        """The first offending line (1-based), when the problem has one."""


class PolicyDenied(Conflict):
    """An approver's edit that the policy (or the appliance's egress allow-list) denies."""

    code = "policy_denied"


class ApprovalDecided(Conflict):
    """The approval was already approved, denied, expired or cancelled."""

    code = "approval_decided"


class ApprovalExpired(Conflict):
    """The approval waited past its expiry; its run has failed with `approval_expired`."""

    code = "approval_expired"


class RunNotAwaiting(Conflict):
    """The approval's run no longer waits for it (it was cancelled)."""

    code = "illegal_transition"
