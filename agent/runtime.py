"""The composition root shared by `garrison` and the API: settings in, wired services out.

Everything that has a lifetime (the database engine, the model clients) is opened here once and
closed here once; the API factory and the CLI commands receive the finished `Services`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
from datastore.errors import DatastoreError
from datastore.settings import DatabaseSettings
from datastore.store import Datastore, open_datastore
from serving.errors import ServingError
from serving.roles import ModelDirectory
from serving.settings import ServingSettings

HEALTH_PROBE_TIMEOUT_S = 3.0


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

    async def health(self, timeout_s: float = HEALTH_PROBE_TIMEOUT_S) -> list[ComponentHealth]:
        """Is each dependency reachable right now? Used by /readyz and `garrison up`.

        Probes run concurrently under a short deadline of their own: a hung model must not make
        a readiness check take the model call timeout (a minute) to answer.
        """

        async def probe(name: str, check: Awaitable[None], ok: str) -> ComponentHealth:
            try:
                await asyncio.wait_for(check, timeout_s)
            except TimeoutError:
                return ComponentHealth(name, False, f"no answer within {timeout_s:g} s")
            except (ServingError, DatastoreError) as exc:
                return ComponentHealth(name, False, f"{exc.code}: {exc.message}")
            return ComponentHealth(name, True, ok)

        return list(
            await asyncio.gather(
                probe("database", self.store.ping(), "reachable"),
                probe(
                    "chat_model",
                    self.models.chat_model("decide").ping(),
                    f"reachable at {self.models.chat_endpoint}",
                ),
                probe(
                    "embed_model",
                    self.models.embedder().ping(),
                    f"reachable at {self.models.embed_endpoint}",
                ),
            )
        )

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
