"""Budget types: what a budget limits, whom it applies to, and how exhaustion is described.

Plain frozen dataclasses and enums, no I/O: the datastore maps its rows onto these, the run loop's
budget gate and the CLI read them. The rule-based message a run ends with when a budget runs out
is rendered here, so the API, the CLI and the step record all say the same thing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum


class Period(StrEnum):
    RUN = "run"
    """Limits each run on its own (checked in memory from the run's own record)."""
    DAY = "day"
    """Limits the sum over all runs of the scope during one UTC day (counters in Postgres)."""


class ScopeKind(StrEnum):
    TENANT = "tenant"
    KEY = "key"
    """The API key a run was submitted with."""
    AGENT = "agent"


class Dimension(StrEnum):
    TOKENS = "tokens"
    STEPS = "steps"
    TOOL_CALLS = "tool_calls"
    WALL_TIME = "wall_time"
    """Seconds since the run started; per run only."""


UNITS = {
    Dimension.TOKENS: "tokens",
    Dimension.STEPS: "steps",
    Dimension.TOOL_CALLS: "tool calls",
    Dimension.WALL_TIME: "s",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """Whom a budget applies to: a tenant, one of its API keys, or one of its agents."""

    kind: ScopeKind
    subject_id: uuid.UUID
    """The tenant's, key's or agent's id."""

    @property
    def key(self) -> str:
        """The scope as stored: `tenant:<uuid>`, `key:<uuid>` or `agent:<uuid>`."""
        return f"{self.kind.value}:{self.subject_id}"

    @classmethod
    def parse(cls, key: str) -> Scope:
        kind, _, subject = key.partition(":")
        return cls(ScopeKind(kind), uuid.UUID(subject))


@dataclass(frozen=True, slots=True)
class Limits:
    """Ceilings per dimension; None is unlimited."""

    tokens: int | None = None
    """Model tokens (prompt + completion) of decisions."""
    steps: int | None = None
    tool_calls: int | None = None
    """Tools run on the model's request, `finish` excepted (it is the answer, not a call)."""
    wall_s: float | None = None
    """Per run only: seconds from the run's start."""

    @property
    def empty(self) -> bool:
        return (
            self.tokens is None
            and self.steps is None
            and self.tool_calls is None
            and (self.wall_s is None)
        )

    def get(self, dimension: Dimension) -> float | None:
        return {
            Dimension.TOKENS: self.tokens,
            Dimension.STEPS: self.steps,
            Dimension.TOOL_CALLS: self.tool_calls,
            Dimension.WALL_TIME: self.wall_s,
        }[dimension]


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """One configured budget: limits on a scope over a period."""

    tenant_id: uuid.UUID
    scope: Scope
    period: Period
    limits: Limits
    label: str = ""
    """The scope for people: the tenant's, key's or agent's name."""
    updated_at: datetime | None = None

    def describe(self) -> str:
        """E.g. `the daily budget of key 'ci-bot'`."""
        which = "per-run" if self.period is Period.RUN else "daily"
        return (
            f"the {which} budget of {self.scope.kind.value} '{self.label or self.scope.subject_id}'"
        )


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """A scope's counters for one UTC day."""

    scope: str
    day: date
    tokens_used: int = 0
    tokens_reserved: int = 0
    """Held by model calls in flight (reserved before the call, released when it is charged)."""
    steps_used: int = 0
    tool_calls_used: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A daily scope that could not take a reservation, with its counters as last seen."""

    scope: str
    limits: Limits
    usage: DailyUsage


@dataclass(frozen=True, slots=True)
class Exhaustion:
    """Which budget ran out, and by how much: the facts behind the run's final message."""

    budget: str
    """The rule, for people (`BudgetRule.describe`)."""
    dimension: Dimension
    limit: float
    used: float
    reserved: float = 0
    """Other calls' reservations in flight (daily budgets)."""
    needed: float = 0
    """What the refused call or step would have taken (its worst case)."""

    def message(self) -> str:
        unit = UNITS[self.dimension]
        what = self.dimension.value.replace("_", " ")
        parts = [f"limit {_num(self.limit)} {unit}", f"used {_num(self.used)} {unit}"]
        if self.reserved:
            parts.append(f"{_num(self.reserved)} {unit} reserved by calls in flight")
        text = f"Stopped: {self.budget} for {what} is exhausted ({', '.join(parts)})"
        if self.needed:
            text += f"; the next {'model call' if self.dimension is Dimension.TOKENS else 'one'}"
            text += f" needs up to {_num(self.needed)} {unit}"
        return text + "."


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one model call (or one tool call) takes from the daily budgets of its run's scopes.

    Tokens are reserved and later settled with the call's real usage; steps and tool calls are
    counted as used at once (a started step is a step taken, even if its worker dies).
    """

    id: uuid.UUID
    run_id: uuid.UUID
    scopes: tuple[str, ...]
    """Sorted, so concurrent reservations lock the same rows in the same order."""
    day: date
    """The UTC day it counts against; its settlement goes to the same day."""
    tokens: int = 0
    steps: int = 0
    tool_calls: int = 0
    ttl_s: float = 600.0
    """After this the reservation may be reclaimed (its worker is presumed dead)."""
