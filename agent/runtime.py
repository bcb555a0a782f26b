"""The composition root shared by `garrison` and the API: settings in, wired services out.

Everything that has a lifetime (the database engine, the model clients) is opened here once and
closed here once; the API factory and the CLI commands receive the finished `Services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.loop import RunLoop
from agent.services.documents import DocumentService
from agent.services.keys import KeyService
from agent.services.runs import RunService
from agent.services.tenancy import TenancyService
from agent.settings import AgentSettings, ApiSettings
from agent.tools import BUILTIN_TOOLS
from agent.worker import Worker
from datastore.settings import DatabaseSettings
from datastore.store import Datastore, open_datastore
from serving.errors import ServingError
from serving.roles import ModelDirectory
from serving.settings import ServingSettings


class Settings(BaseModel):
    """Every section of Garrison's configuration, each read from GARRISON_* variables."""

    model_config = ConfigDict(frozen=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str


@dataclass
class Services:
    settings: Settings
    store: Datastore
    models: ModelDirectory
    keys: KeyService = field(init=False)
    tenancy: TenancyService = field(init=False)
    runs: RunService = field(init=False)
    documents: DocumentService = field(init=False)

    def __post_init__(self) -> None:
        s = self.store
        self.keys = KeyService(s.tenants, s.keys, s.audit)
        self.tenancy = TenancyService(s.tenants, s.agents, s.audit, self.settings.agent)
        self.runs = RunService(s.agents, s.runs)
        self.documents = DocumentService(s.documents, self.models.embedder(), self.settings.agent)

    def run_loop(self) -> RunLoop:
        return RunLoop(
            runs=self.store.runs,
            agents=self.store.agents,
            documents=self.store.documents,
            models=self.models,
            tools=BUILTIN_TOOLS,
            settings=self.settings.agent,
        )

    def worker(self, worker_id: str | None = None) -> Worker:
        return Worker(self.store.runs, self.run_loop(), self.settings.agent, worker_id)

    async def health(self) -> list[ComponentHealth]:
        """Is each dependency reachable right now? Used by /readyz and `garrison up`."""
        results: list[ComponentHealth] = []
        try:
            await self.store.ping()
            results.append(ComponentHealth("database", True, "reachable"))
        except Exception as exc:
            results.append(ComponentHealth("database", False, str(exc)))
        for name, client, url in (
            ("chat_model", self.models.chat_model("decide"), self.models.chat_endpoint),
            ("embed_model", self.models.embedder(), self.models.embed_endpoint),
        ):
            try:
                await client.ping()
                results.append(ComponentHealth(name, True, f"reachable at {url}"))
            except ServingError as exc:
                results.append(ComponentHealth(name, False, f"{exc.code}: {exc.message}"))
        return results

    async def aclose(self) -> None:
        await self.models.aclose()
        await self.store.close()


async def open_services(settings: Settings, url: str, *, upgrade: bool = True) -> Services:
    store = await open_datastore(url, settings.database, upgrade=upgrade)
    return Services(settings=settings, store=store, models=ModelDirectory(settings.serving))


def describe(settings: Settings) -> dict[str, Any]:
    """Configuration as people should see it: no secrets."""
    return {
        "database": (settings.database.database_url and "external") or "embedded",
        "data_dir": str(settings.database.data_dir),
        "chat_url": settings.serving.chat_url,
        "embed_url": settings.serving.embed_url,
        "api": f"http://{settings.api.host}:{settings.api.port}",
    }
