"""Model deployments: the registry as last synced, replaced as a whole in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from agent.domain import ModelDeploymentRecord, ModelSync
from datastore.errors import translated
from datastore.repos.audit import append_entry
from datastore.schema import ModelDeploymentRow

DEPLOYMENTS = cast(Table, ModelDeploymentRow.__table__)
# Two processes syncing at once (`garrison up` on two hosts) take turns instead of interleaving
# their upserts and deletes.
SYNC_LOCK_KEY = 0x6A7272_3D1


def _record(row: Row[Any]) -> ModelDeploymentRecord:
    return ModelDeploymentRecord(
        name=row.name,
        spec=row.spec,
        roles=tuple(row.roles),
        placement_kind=row.placement_kind,
        updated_at=row.updated_at,
    )


class ModelDeploymentRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def sync(self, deployments: Sequence[ModelDeploymentRecord], *, actor: str) -> ModelSync:
        wanted = {d.name: d for d in deployments}
        async with translated(), self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SYNC_LOCK_KEY})
            rows = (await conn.execute(select(DEPLOYMENTS.c.name, DEPLOYMENTS.c.spec))).all()
            stored = {row.name: row.spec for row in rows}
            added = tuple(n for n in wanted if n not in stored)
            changed = tuple(n for n in wanted if n in stored and stored[n] != wanted[n].spec)
            removed = tuple(sorted(set(stored) - set(wanted)))
            for name in (*added, *changed):
                record = wanted[name]
                values = {
                    "spec": record.spec,
                    "roles": list(record.roles),
                    "placement_kind": record.placement_kind,
                    "updated_at": func.now(),
                }
                await conn.execute(
                    insert(DEPLOYMENTS)
                    .values(name=name, **values)
                    .on_conflict_do_update(index_elements=[DEPLOYMENTS.c.name], set_=values)
                )
            if removed:
                await conn.execute(delete(DEPLOYMENTS).where(DEPLOYMENTS.c.name.in_(removed)))
            report = ModelSync(
                added=added,
                changed=changed,
                removed=removed,
                unchanged=tuple(n for n in wanted if n not in added and n not in changed),
            )
            # Audited only when something changed: `garrison up` syncs on every start, and an
            # entry per restart would bury the changes that matter.
            if added or changed or removed:
                await append_entry(
                    conn,
                    tenant_id=None,
                    actor=actor,
                    action="models.sync",
                    object_type="model_registry",
                    object_id="model_deployments",
                    detail={
                        "added": list(added),
                        "changed": list(changed),
                        "removed": list(removed),
                    },
                )
        return report

    async def list_deployments(self) -> list[ModelDeploymentRecord]:
        async with translated(), self._engine.connect() as conn:
            rows = (await conn.execute(select(DEPLOYMENTS).order_by(DEPLOYMENTS.c.name))).all()
        return [_record(r) for r in rows]
