"""Stable reason codes recorded on failed steps and runs. Clients and dashboards match on these."""

from typing import Final

MODEL_UNAVAILABLE: Final = "model_unavailable"
MODEL_TIMEOUT: Final = "model_timeout"
MODEL_OVERLOADED: Final = "model_overloaded"
MODEL_ERROR: Final = "model_http_error"
INVALID_MODEL_OUTPUT: Final = "invalid_model_output"
STEP_LIMIT_EXCEEDED: Final = "step_limit_exceeded"
TOOL_NOT_ALLOWED: Final = "tool_not_allowed"
TOOL_FAILED: Final = "tool_failed"
AGENT_MISSING: Final = "agent_missing"
CANCELLED: Final = "cancelled"
"""Someone cancelled the run (API or CLI); a running run stops at its next step boundary."""
WORKER_LOST: Final = "worker_lost"
"""The worker driving the run died on every allowed attempt: the run is parked for an operator."""
POLICY_DENIED: Final = "policy_denied"
"""A policy denied the proposed action (it never ran; the model is told), or, as a run's failure,
the run's actions were refused `GARRISON_POLICY_MAX_DENIALS` times."""
APPROVAL_DENIED: Final = "approval_denied"
"""An approver denied the proposed action; it never ran and the model is told why."""
APPROVAL_EXPIRED: Final = "approval_expired"
"""Nobody decided a pending approval before it expired: the run fails."""
APPROVAL_MISSING: Final = "approval_missing"
"""A step waits on an approval this run does not have (a fork copied the waiting step): the
action is not run, and the model is told."""
BUDGET_EXHAUSTED: Final = "budget_exhausted"
"""A budget (tokens, steps, tool calls or wall time; per run or per day) cannot cover the next
model call or tool call: the run ends `budget_exhausted`, its detail naming the budget."""
LOOP_DETECTED: Final = "loop_detected"
"""The model repeated a tool call with the same arguments and result, or its last tool calls
brought nothing new: the run is stopped (`agent.loopdetect`)."""
