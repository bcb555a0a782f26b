"""The organisation's record tables (`org_data`), written as the application: demo data loading.

Agents never write here; they read these rows through the views of `tenant_data` as their
tenant's own role (`datastore.tenant_sql`). Loading is idempotent: rows already present (same
tenant and id) are left as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from datastore.errors import translated

INSERT_CUSTOMER = text(
    "INSERT INTO org_data.customers (tenant_id, id, name, country, segment, contact_email, since) "
    "VALUES (:tenant_id, :id, :name, :country, :segment, :contact_email, :since) "
    "ON CONFLICT (tenant_id, id) DO NOTHING"
)
INSERT_ORDER = text(
    "INSERT INTO org_data.orders (tenant_id, id, customer_id, product, quantity, amount, "
    "currency, status, ordered_at) VALUES (:tenant_id, :id, :customer_id, :product, :quantity, "
    ":amount, :currency, :status, :ordered_at) ON CONFLICT (tenant_id, id) DO NOTHING"
)


class OrgDataRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load(
        self,
        tenant_id: uuid.UUID,
        customers: Sequence[Mapping[str, Any]],
        orders: Sequence[Mapping[str, Any]],
    ) -> int:
        """Insert the rows that are missing, in one transaction; how many were new."""
        added = 0
        async with translated(), self._engine.begin() as conn:
            for statement, rows in ((INSERT_CUSTOMER, customers), (INSERT_ORDER, orders)):
                for row in rows:
                    result = await conn.execute(statement, {**row, "tenant_id": tenant_id})
                    added += result.rowcount
        return added
