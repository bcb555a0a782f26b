"""Keeps Garrison's own engines running while `garrison up` runs.

One watcher per local deployment polls its process; when it has died (not when an operator
stopped it: that removes the pid file), the watcher restarts it after an exponential backoff and
waits for it to be ready again, up to `max_restarts` times in a row; an engine that then stays
healthy for `stable_s` earns a fresh budget. External deployments are only health-checked, and
changes in their health are logged. Nothing here decides routing: the router sees a dead engine
as `ModelUnavailable` and falls back on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from serving.engine.command import is_local
from serving.engine.errors import EngineError
from serving.engine.manager import EngineManager
from serving.registry import Deployment

log = logging.getLogger("garrison.engine")


@dataclass
class Watch:
    """What the supervisor knows about one local engine."""

    restarts: int = 0
    """Restarts since the engine was last stable; reset after `stable_s` of health."""
    total_restarts: int = 0
    ready_at: float | None = None
    retrying: bool = False
    """A restart failed: the engine is down for us to bring back, whatever its pid file says."""
    gave_up: bool = False
    events: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        manager: EngineManager,
        *,
        max_restarts: int | None = None,
        backoff_s: float = 2.0,
        backoff_max_s: float = 60.0,
        poll_s: float = 2.0,
        stable_s: float = 300.0,
        external_every_s: float = 30.0,
    ) -> None:
        self.manager = manager
        self.max_restarts = (
            manager.settings.engine_max_restarts if max_restarts is None else max_restarts
        )
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.stable_s = stable_s
        self.external_every_s = external_every_s
        self.watches = {d.name: Watch() for d in manager.local}

    async def run(self) -> None:
        """Watch until cancelled; engines keep running after (stopping them is `models stop`)."""
        async with asyncio.TaskGroup() as group:
            for deployment in self.manager.registry.deployments:
                if is_local(deployment):
                    group.create_task(self._watch(deployment), name=f"watch-{deployment.name}")
                else:
                    group.create_task(self._check(deployment), name=f"check-{deployment.name}")

    async def _watch(self, deployment: Deployment) -> None:
        watch = self.watches[deployment.name]
        while not watch.gave_up:
            state = self.manager.status(deployment).state
            if state == "running" and watch.ready_at is None:
                watch.ready_at = time.monotonic()
            elif state == "dead" or (state == "stopped" and watch.retrying):
                await self._restart(deployment, watch)
            await asyncio.sleep(self.poll_s)

    async def _restart(self, deployment: Deployment, watch: Watch) -> None:
        name = deployment.name
        if watch.ready_at is not None and time.monotonic() - watch.ready_at >= self.stable_s:
            watch.restarts = 0  # it ran well for a while: this is a new incident
        watch.ready_at = None
        if watch.restarts >= self.max_restarts:
            watch.gave_up = True
            self._note(
                watch,
                logging.ERROR,
                f"{name} died again; gave up after "
                f"{watch.restarts} restarts (start it with `garrison models serve {name}`)",
            )
            return
        delay = min(self.backoff_s * 2**watch.restarts, self.backoff_max_s)
        watch.restarts += 1
        watch.total_restarts += 1
        self._note(
            watch,
            logging.WARNING,
            f"{name} died; restart {watch.restarts} of {self.max_restarts} in {delay:.0f} s",
        )
        await asyncio.sleep(delay)
        try:
            # The dead engine's pid file is replaced by the new start.
            await asyncio.to_thread(self.manager.start, deployment)
            waited = await self.manager.wait_ready(deployment)
        except EngineError as exc:
            watch.retrying = True
            self._note(watch, logging.ERROR, f"{name} restart failed: {exc.message}")
            return
        watch.retrying = False
        watch.ready_at = time.monotonic()
        self._note(watch, logging.INFO, f"{name} is ready again after {waited:.0f} s")

    async def _check(self, deployment: Deployment) -> None:
        healthy: bool | None = None
        while True:
            health = await self.manager.health(deployment)
            if health.ok != healthy:
                level = logging.INFO if health.ok else logging.WARNING
                log.log(level, "external %s: %s", deployment.name, health.detail)
                healthy = health.ok
            await asyncio.sleep(self.external_every_s)

    @staticmethod
    def _note(watch: Watch, level: int, message: str) -> None:
        watch.events.append(message)
        log.log(level, "%s", message)
