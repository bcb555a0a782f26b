"""`garrison up`'s engines: install and prepare what is missing, start the local engines of the
active registry, wait for them, and keep them alive while the appliance runs.

Only local deployments are started (external ones are someone else's); on the bundled CPU
registry this also installs the engine's own virtualenv and converts the Gemma GGUF, once, with
progress. On stop, the engines this `up` started are stopped; ones it found running are left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.runtime import Settings
from ops.commands.engine import engine_settings
from ops.output import Output
from serving.embedders.routing import embeds_in_process
from serving.engine.bundled import gemma_dir
from serving.engine.command import is_local
from serving.engine.environment import install, locate
from serving.engine.gguf import import_gguf
from serving.engine.manager import EngineManager
from serving.engine.supervisor import Supervisor
from serving.registry import Deployment
from serving.registry_source import active_registry


@dataclass
class RunningEngines:
    manager: EngineManager | None = None
    started: list[Deployment] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None

    async def stop(self, out: Output) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.supervisor
        if self.manager is None:
            return
        for deployment in self.started:
            out.say(f"stopping engine {deployment.name}")
            await asyncio.to_thread(self.manager.stop, deployment)


def _indented(out: Output) -> Callable[[str], None]:
    return lambda line: out.say(f"  {line}")


async def bring_up(settings: Settings, out: Output) -> RunningEngines:
    """Start what the registry says Garrison runs itself; returns a handle to stop it later."""
    if settings.serving.engines == "off":
        return RunningEngines()
    source = active_registry(settings.serving)
    local = [d for d in source.registry.deployments if is_local(d)]
    if embeds_in_process(settings.embedder, source):
        # Nobody would call an engine that only embeds: it would hold ~1.4 GB and a share of a
        # core for nothing, and add its start-up to the wait.
        idle = [d for d in local if set(d.roles) == {"embed"}]
        for deployment in idle:
            out.say(f"engine {deployment.name} (embed): not started, embeddings run in process")
        local = [d for d in local if d not in idle]
    if not local:
        return RunningEngines()
    engine = engine_settings(settings)
    env = locate(engine)
    if env.managed and env.installed() is None:
        out.say("installing the vLLM CPU engine in its own virtualenv (once: ~2 min, ~4 GB)")
        started = time.perf_counter()
        await asyncio.to_thread(install, env, _indented(out))
        out.say(f"engine installed ({time.perf_counter() - started:.0f} s)")
    if source.origin == "bundled":
        report = await asyncio.to_thread(import_gguf, env, gemma_dir(engine), _indented(out))
        if not report.cached:
            out.say(f"bundled Gemma 3 270M prepared ({report.seconds:.0f} s)")
    manager = EngineManager(source.registry, engine, python=env.python)
    running = RunningEngines(manager)
    try:
        for deployment in local:
            _record, was_started = await asyncio.to_thread(manager.start, deployment)
            if was_started:
                running.started.append(deployment)
            state = "starting" if was_started else "already running"
            out.say(f"engine {deployment.name} ({', '.join(deployment.roles)}): {state}")
        # Engines load in parallel: waiting for them together costs the slowest, not the sum.
        waited = await asyncio.gather(
            *(manager.wait_ready(d, progress=_indented(out)) for d in local)
        )
        for deployment, seconds in zip(local, waited, strict=True):
            out.say(f"engine {deployment.name} ready ({seconds:.0f} s)")
    except BaseException:
        await running.stop(out)
        raise
    running.supervisor = asyncio.create_task(Supervisor(manager).run(), name="engine-supervisor")
    return running
