"""The engines of one registry: which deployments Garrison runs itself, on which ports, and the
start/stop/status/health operations the CLI, `garrison up` and the supervisor share.

Externally placed deployments are part of the picture (their health is checked here) but are
never started or stopped: someone else runs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from serving.engine import process
from serving.engine.command import engine_command, engine_env, is_local, local_ports
from serving.engine.errors import EngineNotInstalled, EngineStartFailed
from serving.engine.health import Health, check, wait_ready
from serving.engine.process import EngineFiles, EngineRecord, EngineStatus
from serving.engine.settings import EngineSettings
from serving.engine.streaming import Progress, quiet
from serving.registry import Deployment, Registry


class EngineManager:
    def __init__(
        self,
        registry: Registry,
        settings: EngineSettings,
        *,
        python: Path | None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        """`python` runs the engines (None: not installed, so nothing can be started)."""
        self.registry = registry
        self.settings = settings
        self.python = python
        self.ports = local_ports(registry)
        self._base_env = dict(os.environ if base_env is None else base_env)

    @property
    def local(self) -> tuple[Deployment, ...]:
        return tuple(d for d in self.registry.deployments if is_local(d))

    def files(self, deployment: Deployment) -> EngineFiles:
        return EngineFiles(self.settings.engines_dir, deployment.name)

    def url(self, deployment: Deployment) -> str:
        """The OpenAI base URL (with /v1) clients use for this deployment."""
        return self.registry.url_of(deployment.name)

    def command(self, deployment: Deployment) -> tuple[list[str], dict[str, str]]:
        if self.python is None:
            raise EngineNotInstalled(
                "the vLLM engine is not installed: run `garrison engine install`"
            )
        port = self.ports[deployment.name]
        argv = engine_command(deployment, python=str(self.python), port=port)
        env = engine_env(deployment, self._base_env, kvcache_gb=self.settings.engine_kvcache_gb)
        return argv, env

    def start(self, deployment: Deployment) -> tuple[EngineRecord, bool]:
        """Start the engine unless it already runs; returns its record and whether it started."""
        if not is_local(deployment):
            raise EngineStartFailed(f"{deployment.name} runs elsewhere; Garrison does not start it")
        files = self.files(deployment)
        current = process.status(files)
        if current.state == "running" and current.record is not None:
            return current.record, False
        if current.state == "dead":
            # A server that died hard leaves vLLM's engine core and workers behind, holding
            # memory (and the pid file): clear them before starting afresh.
            process.stop(files, grace_s=self.settings.engine_stop_grace_s)
        # Not installed comes first: it is the root cause when the bundled models are missing too.
        argv, env = self.command(deployment)
        model = Path(deployment.model)
        if not model.is_dir():
            raise EngineStartFailed(
                f"the model folder of {deployment.name} does not exist: {model}"
                " (bundled models: `garrison engine install`, then `garrison models import-gguf`)"
            )
        return process.start(files, argv, env, port=self.ports[deployment.name]), True

    async def wait_ready(
        self, deployment: Deployment, *, timeout_s: float | None = None, progress: Progress = quiet
    ) -> float:
        files = self.files(deployment)
        record = files.read()
        if record is None:
            raise EngineStartFailed(f"{deployment.name} has not been started")
        limit = self.settings.engine_ready_timeout_s if timeout_s is None else timeout_s
        return await wait_ready(
            files, record, deployment.served_name, timeout_s=limit, progress=progress
        )

    def stop(self, deployment: Deployment) -> bool:
        return process.stop(self.files(deployment), grace_s=self.settings.engine_stop_grace_s)

    def status(self, deployment: Deployment) -> EngineStatus:
        if not is_local(deployment):
            return EngineStatus(deployment.name, "external", self.url(deployment), None)
        return process.status(self.files(deployment))

    async def health(self, deployment: Deployment) -> Health:
        # Engines we did not start may be any OpenAI-compatible server, not necessarily vLLM.
        url = self.url(deployment)
        return await check(url, deployment.served_name, vllm=is_local(deployment))

    def select(self, names: Sequence[str]) -> tuple[Deployment, ...]:
        """The deployments named (all when none are), in registry order; KeyError names the
        first unknown one."""
        for name in names:
            if self.registry.get(name) is None:
                raise KeyError(name)
        wanted = set(names)
        return tuple(d for d in self.registry.deployments if not wanted or d.name in wanted)
