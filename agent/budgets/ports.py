"""The budget store port: configured rules, daily counters and reservations.

`datastore.repos.budgets` implements it. Every daily check is one guarded statement in the
database, so concurrent runs on one scope cannot overspend it between a check and a charge.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Protocol

from agent.budgets.model import BudgetRule, DailyUsage, Refusal, Reservation


class BudgetStore(Protocol):
    async def list_rules(self, tenant_id: uuid.UUID | None) -> list[BudgetRule]:
        """The rules of one tenant (None: of every tenant), labelled with their scope's name."""
        ...

    async def put_rule(self, rule: BudgetRule, *, actor: str) -> BudgetRule:
        """Create or replace the rule for (scope, period), audited under `actor` in the same
        transaction."""
        ...

    async def delete_rule(self, rule: BudgetRule, *, actor: str) -> bool:
        """Remove the rule for the rule's (scope, period), audited; False if there was none."""
        ...

    async def run_api_key(self, run_id: uuid.UUID) -> uuid.UUID | None:
        """The API key a run was submitted with (None: submitted by an operator)."""
        ...

    async def reserve(self, reservation: Reservation) -> list[Refusal]:
        """Take the reservation from every scope's counters for its day, or from none.

        Empty when it was taken; else the scopes whose limits it would pass (nothing is held).
        """
        ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Release the reservation's tokens and charge `used_tokens` instead, even if the
        reservation had expired and been reclaimed meanwhile."""
        ...

    async def reclaim_expired(self, scopes: Sequence[str]) -> int:
        """Release expired reservations on these scopes (their workers died before settling);
        how many were released."""
        ...

    async def usage(self, scopes: Sequence[str], day: date) -> dict[str, DailyUsage]: ...
