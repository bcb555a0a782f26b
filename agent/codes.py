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
