"""The composition root shared by `garrison` and the API: settings in, wired services out.

Everything that has a lifetime (the database engine, the model router and its clients) is opened
here once and closed here once; the API factory and the CLI commands receive the finished
`Services`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.budgets.directory import BudgetDirectory
from agent.budgets.service import BudgetService
from agent.events import EventHub, EventSettings, EventStream
from agent.loop import RunLoop
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.egress import EgressPolicy
from agent.outbox.service import OutboxService
from agent.outbox.settings import OutboxSettings
from agent.policy.audit_sweep import SWEEP_INTERVAL_S, AuditSweep
from agent.policy.gate import Governance
from agent.policy.service import PolicyService
from agent.policy.settings import GovernanceSettings
from agent.ports import SqlLimits
from agent.replay import ReplayService
from agent.services.approvals import ApprovalService
from agent.services.audit import AuditService
from agent.services.documents import DocumentService
from agent.services.forks import ForkService
from agent.services.keys import KeyService
from agent.services.models import ModelCatalog
from agent.services.runs import RunService
from agent.services.search_tuning import SearchTuning
from agent.services.tenancy import TenancyService
from agent.settings import AgentSettings, ApiSettings
from agent.sqlguard import SqlChecks
from agent.tools import Tool, build_tools
from agent.worker import Sweep, Worker
from datastore.errors import DatastoreError
from datastore.repos.audit_sweep import StepAuditRepository
from datastore.schema import EMBEDDING_DIM
from datastore.settings import DatabaseSettings
from datastore.store import Datastore, open_datastore
from serving.embedders.routing import InProcessEmbedRouter, choose_local
from serving.embedders.settings import EmbedderSettings
from serving.engine.settings import EngineSettings
from serving.health import DeploymentHealth
from serving.registry_source import RegistrySource, active_registry
from serving.router import Router
from serving.settings import ServingSettings

HEALTH_PROBE_TIMEOUT_S = 3.0
READINESS_ROLES = (("chat_model", "decide"), ("embed_model", "embed"))
"""Readiness needs one answering deployment per role; the component keeps its historic name."""


class Settings(BaseModel):
    """Every section of Garrison's configuration, each read from GARRISON_* variables."""

    model_config = ConfigDict(frozen=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    governance: GovernanceSettings = Field(default_factory=GovernanceSettings)


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str


@dataclass
class Services:
    settings: Settings
    store: Datastore
    models: Router
    source: RegistrySource
    """Where the router's registry came from (models file, environment, bundled, none)."""
    keys: KeyService = field(init=False)
    tenancy: TenancyService = field(init=False)
    runs: RunService = field(init=False)
    documents: DocumentService = field(init=False)
    catalog: ModelCatalog = field(init=False)
    forks: ForkService = field(init=False)
    replays: ReplayService = field(init=False)
    outbox: OutboxService = field(init=False)
    audit: AuditService = field(init=False)
    events: EventStream = field(init=False)
    policies: PolicyService = field(init=False)
    approvals: ApprovalService = field(init=False)
    governance: Governance = field(init=False)
    """Policies and approvals as the run loop sees them."""
    audit_sweep: AuditSweep = field(init=False)
    """Appends the audit entries of governed steps that a crash lost (workers run it)."""
    search_tuning: SearchTuning = field(init=False)
    """Each tenant's calibrated HNSW `ef_search` (workers keep it current)."""
    budgets: BudgetService = field(init=False)
    budget_rules: BudgetDirectory = field(init=False)
    """Which budgets apply to a run; one per process, so its cache is shared by every worker."""
    sql_checks: SqlChecks = field(init=False)
    """The SQL guard's recent answers, shared by the policy gate and every sql_query tool: the
    gate's parse of a query is the tool's too."""

    def __post_init__(self) -> None:
        s = self.store
        self.sql_checks = SqlChecks()
        self.keys = KeyService(s.tenants, s.keys)
        self.tenancy = TenancyService(s.tenants, s.agents, self.settings.agent)
        self.runs = RunService(s.agents, s.runs)
        self.documents = DocumentService(s.documents, self.models.embedder(), self.settings.agent)
        self.search_tuning = SearchTuning(s.documents, self.models.embedder(), self.settings.agent)
        self.catalog = ModelCatalog(s.models, self.models.registry)
        self.forks = ForkService(s.runs, s.forks, self.models.registry)
        self.replays = ReplayService(
            runs=s.runs,
            agents=s.agents,
            documents=s.documents,
            tools=self.tools(),
            settings=self.settings.agent,
        )
        self.outbox = OutboxService(s.outbox, s.runs)
        self.audit = AuditService(s.audit, s.tenants)
        self.events = EventStream(s.runs, s.events, EventHub(s.events), self.settings.events)
        self.policies = PolicyService(s.tenants, s.agents, s.policies, s.runs)
        self.approvals = ApprovalService(
            s.approvals,
            s.policies,
            self.tools(),
            EgressPolicy(self.settings.outbox.http_allow_hosts),
            s.runs,
        )
        self.governance = Governance(
            s.policies,
            s.approvals,
            s.audit,
            self.settings.governance,
            sql=s.sql,
            sql_checks=self.sql_checks,
        )
        self.audit_sweep = AuditSweep(StepAuditRepository(s.engine), s.audit)
        self.budget_rules = BudgetDirectory(s.budgets, self.settings.agent)
        self.budgets = BudgetService(
            s.budgets, tenants=s.tenants, keys=s.keys, agents=s.agents, directory=self.budget_rules
        )

    def tools(self) -> dict[str, Tool[Any]]:
        """Every tool, built from this configuration (each caller gets its own instances)."""
        g = self.settings.governance
        return build_tools(
            self.settings.outbox,
            sql=self.store.sql,
            records=self.store.records,
            sql_limits=SqlLimits(g.sql_timeout_s, g.sql_max_rows, g.sql_max_bytes),
            sql_checks=self.sql_checks,
        )

    def run_loop(self) -> RunLoop:
        return RunLoop(
            runs=self.store.runs,
            agents=self.store.agents,
            documents=self.store.documents,
            models=self.models,
            governance=self.governance,
            tools=self.tools(),
            settings=self.settings.agent,
            budgets=self.budget_rules,
        )

    def worker(self, worker_id: str | None = None) -> Worker:
        sweeps = (
            Sweep(self.approvals.sweep, self.settings.governance.approval_sweep_s),
            Sweep(
                self.audit_sweep.sweep,
                SWEEP_INTERVAL_S,
                "audit",
                "appended %d audit entries lost after their steps committed",
            ),
            Sweep(
                self.search_tuning.sweep,
                self.settings.agent.search_tune_interval_s,
                "search tuning",
                "measured the HNSW recall of %d tenant(s) on their own chunks",
            ),
        )
        return Worker(self.store.runs, self.run_loop(), self.settings.agent, worker_id, sweeps)

    def dispatcher(self, dispatcher_id: str | None = None) -> Dispatcher:
        """Delivers the outbox's side effects; runs beside the worker in `up` and `worker`."""
        return Dispatcher(self.store.outbox, self.settings.outbox, dispatcher_id=dispatcher_id)

    async def health(self, timeout_s: float = HEALTH_PROBE_TIMEOUT_S) -> list[ComponentHealth]:
        """Is each dependency reachable right now? Used by /readyz and `garrison up`.

        The database, then per readiness role (decide, embed) whether at least one deployment of
        its chain answers. Every deployment is probed concurrently under a short deadline of its
        own: a hung model must not make a readiness check take the model call timeout to answer.
        """

        async def probe(name: str, check: Awaitable[None], ok: str) -> ComponentHealth:
            try:
                await asyncio.wait_for(check, timeout_s)
            except TimeoutError:
                return ComponentHealth(name, False, f"no answer within {timeout_s:g} s")
            except DatastoreError as exc:
                return ComponentHealth(name, False, f"{exc.code}: {exc.message}")
            return ComponentHealth(name, True, ok)

        database, deployments = await asyncio.gather(
            probe("database", self.store.ping(), "reachable"), self.models.health(timeout_s)
        )
        by_name = {h.name: h for h in deployments}
        return [database, *(self._role(c, role, by_name) for c, role in READINESS_ROLES)]

    def _role(
        self, component: str, role: str, health: dict[str, DeploymentHealth]
    ) -> ComponentHealth:
        if role == "embed" and isinstance(self.models, InProcessEmbedRouter):
            problem = self.models.local.check()
            detail = problem or self.models.local.describe()
            return ComponentHealth(component, problem is None, detail)
        chain = [health[lane.name] for lane in self.models.chain(role)]
        if not chain:
            return ComponentHealth(component, False, self.models.unserved(role))
        up = next((h for h in chain if h.ok), None)
        if up is not None:
            return ComponentHealth(component, True, f"reachable at {up.url} (deployment {up.name})")
        return ComponentHealth(component, False, "; ".join(f"{h.name}: {h.detail}" for h in chain))

    async def aclose(self) -> None:
        await self.events.aclose()
        await self.models.aclose()
        await self.store.close()


def open_router(
    settings: ServingSettings,
    embedder: EmbedderSettings | None = None,
    *,
    data_dir: Path | None = None,
) -> tuple[RegistrySource, Router]:
    """The active registry and a router over it; `ModelsFileError` if the models file is bad.
    Embedding deployments must produce the vectors the document store keeps. With `embedder`
    settings that ask for it, the `embed` role is answered in process (serving.embedders), with
    its converted model cached under `data_dir` (default: GARRISON_DATA_DIR's)."""
    source = active_registry(settings, embedding_dim=EMBEDDING_DIM)
    local = None
    if embedder is not None:
        engine = EngineSettings() if data_dir is None else EngineSettings(data_dir=data_dir)
        local = choose_local(embedder, source, engine)
    if local is not None:
        return source, InProcessEmbedRouter(source, settings, local)
    return source, Router(source.registry, settings, hints=source)


async def open_services(settings: Settings, url: str, *, upgrade: bool = True) -> Services:
    # The registry first: an invalid models file must fail before anything is opened.
    source, router = open_router(
        settings.serving, settings.embedder, data_dir=settings.database.data_dir
    )
    try:
        store = await open_datastore(url, settings.database, upgrade=upgrade)
    except BaseException:
        await router.aclose()
        raise
    return Services(settings=settings, store=store, models=router, source=source)


def describe(settings: Settings) -> dict[str, Any]:
    """Configuration as people should see it: no secrets."""
    return {
        "database": (settings.database.database_url and "external") or "embedded",
        "data_dir": str(settings.database.data_dir),
        "chat_url": settings.serving.chat_url,
        "embed_url": settings.serving.embed_url,
        "models_file": str(settings.serving.models_file) if settings.serving.models_file else None,
        "api": f"http://{settings.api.host}:{settings.api.port}",
    }
