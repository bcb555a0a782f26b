"""The datastore's composition: one engine, every repository, and a health probe.

`open_datastore` resolves where the database is (external URL or the embedded server), migrates
if asked, and hands back repositories that satisfy `agent.ports`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from datastore import migrate
from datastore.driver import prepare_for_search
from datastore.embedded import EmbeddedPostgres
from datastore.engine import create_async
from datastore.errors import translated
from datastore.fastpath import FastPath
from datastore.repos.approvals import ApprovalRepository
from datastore.repos.audit import AuditRepository
from datastore.repos.budgets import BudgetRepository
from datastore.repos.documents import DocumentRepository
from datastore.repos.events import EventRepository
from datastore.repos.forks import ForkRepository
from datastore.repos.models import ModelDeploymentRepository
from datastore.repos.org_data import OrgDataRepository
from datastore.repos.outbox import OutboxRepository
from datastore.repos.policies import PolicyRepository
from datastore.repos.records import RecordRepository
from datastore.repos.runs import RunRepository
from datastore.repos.tenancy import AgentRepository, KeyRepository, TenantRepository
from datastore.settings import DatabaseSettings
from datastore.tenant_roles import TenantRoleRepository
from datastore.tenant_sql import TenantSqlRunner

SEARCH_POOL_SIZE = 10
"""Searches in flight at once per process (the API's and a worker's together)."""


@dataclass
class Datastore:
    url: str
    engine: AsyncEngine
    fast: FastPath = field(init=False)
    """Plain psycopg connections for the worker's per-run and per-step statements."""
    search_pool: FastPath = field(init=False)
    """Plain psycopg connections for searches, prepared for vectors (`repos.search`)."""
    tenants: TenantRepository = field(init=False)
    keys: KeyRepository = field(init=False)
    agents: AgentRepository = field(init=False)
    runs: RunRepository = field(init=False)
    documents: DocumentRepository = field(init=False)
    audit: AuditRepository = field(init=False)
    models: ModelDeploymentRepository = field(init=False)
    events: EventRepository = field(init=False)
    outbox: OutboxRepository = field(init=False)
    forks: ForkRepository = field(init=False)
    budgets: BudgetRepository = field(init=False)
    policies: PolicyRepository = field(init=False)
    approvals: ApprovalRepository = field(init=False)
    records: RecordRepository = field(init=False)
    org_data: OrgDataRepository = field(init=False)
    tenant_roles: TenantRoleRepository = field(init=False)
    sql: TenantSqlRunner = field(init=False)
    """`sql_query`'s runner: connections as the tenant's own database role."""

    def __post_init__(self) -> None:
        self.fast = FastPath(self.url)
        self.search_pool = FastPath(
            self.url, max_size=SEARCH_POOL_SIZE, configure=prepare_for_search, name="search"
        )
        self.tenants = TenantRepository(self.engine)
        self.keys = KeyRepository(self.engine)
        self.agents = AgentRepository(self.engine, self.fast)
        self.runs = RunRepository(self.engine, self.url, self.fast)
        self.documents = DocumentRepository(self.engine, self.search_pool)
        self.audit = AuditRepository(self.engine)
        self.models = ModelDeploymentRepository(self.engine)
        self.events = EventRepository(self.engine)
        self.outbox = OutboxRepository(self.engine)
        self.forks = ForkRepository(self.engine)
        self.budgets = BudgetRepository(self.engine)
        self.policies = PolicyRepository(self.engine, self.fast)
        self.approvals = ApprovalRepository(self.engine)
        self.records = RecordRepository(self.engine)
        self.org_data = OrgDataRepository(self.engine)
        self.tenant_roles = TenantRoleRepository(self.engine)
        self.sql = TenantSqlRunner(self.engine, self.tenant_roles)

    async def ping(self) -> None:
        async with translated(), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.runs.close()
        await self.fast.close()
        await self.search_pool.close()
        await self.engine.dispose()


class DatabaseLocation:
    """Resolves the database URL, starting the embedded server when no URL is configured."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._embedded: EmbeddedPostgres | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded

    def resolve(self) -> str:
        if self.settings.database_url is not None:
            return self.settings.database_url
        if self._embedded is None:
            self._embedded = EmbeddedPostgres(self.settings.data_dir)
        return self._embedded.start()

    def release(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


async def open_datastore(url: str, settings: DatabaseSettings, *, upgrade: bool) -> Datastore:
    if upgrade:
        await asyncio.to_thread(migrate.upgrade, url)
    engine = create_async(
        url, pool_size=settings.db_pool_size, connect_timeout_s=settings.db_connect_timeout_s
    )
    return Datastore(url=url, engine=engine)
