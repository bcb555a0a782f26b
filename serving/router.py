"""Routing by role: which deployment answers a call, with retries, fallback and back-pressure.

Built once from a `Registry`; hands out a `ChatModel` per role and an `Embedder` that route every
call along the role's chain (`Registry.chain`). Per deployment there is one client, one circuit
breaker and one in-flight counter. The rules, in the order a call meets them:

* a deployment at its `max_in_flight` cap or with an open circuit is skipped;
* `ModelUnavailable` (refused, 502/503/504) is retried on the same deployment a bounded number of
  times with full-jitter backoff, then the call falls back to the next deployment;
* `ModelTimeout` falls back at once: a hung engine would only hang again;
* `ModelHTTPError` (4xx) and `ModelOutputError` are the request's fault or the caller's business:
  they are raised as they are, never retried here or sent elsewhere;
* when nothing answered: `ModelOverloaded` if a deployment was skipped for being busy (retrying
  soon will help), else `ModelTimeout` if every attempt timed out, else `ModelUnavailable`;
* the whole routed call runs under one deadline.

Per-deployment state and the policy knobs live in `serving.lane`, health probing in
`serving.health`, and where the deployments come from in `serving.registry_source`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from serving.breaker import BreakerState
from serving.client import OpenAICompatibleClient
from serving.errors import ModelOverloaded, ModelTimeout, ModelUnavailable, ServingError
from serving.health import PROBE_TIMEOUT_S, DeploymentHealth, probe
from serving.lane import Lane, RoutePolicy, open_lanes
from serving.registry import Registry
from serving.settings import ServingSettings
from serving.types import ChatResult, EmbeddingResult, Message

log = logging.getLogger(__name__)
T = TypeVar("T")
EMBED_ROLE = "embed"


class Hints(Protocol):
    """What to tell an operator, per role; `RegistrySource` knows where the registry came from."""

    def how_to_configure(self, role: str) -> str: ...
    def when_down(self, role: str) -> str: ...


class _GenericHints:
    def how_to_configure(self, role: str) -> str:
        return f"add a deployment serving {role!r} to the models file (GARRISON_MODELS_FILE)"

    def when_down(self, role: str) -> str:
        return "see `garrison models health`"


class Router:
    """Resolves roles to routed models. Built once at the composition root, closed on shutdown."""

    def __init__(
        self,
        registry: Registry,
        settings: ServingSettings,
        *,
        policy: RoutePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hints: Hints | None = None,
    ) -> None:
        self.registry = registry
        self.policy = policy or RoutePolicy.from_settings(settings)
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret
        self._sleep = sleep
        self._hints = hints or _GenericHints()
        self.lanes = open_lanes(registry, settings, self.policy, clock)
        self._chains: dict[str, tuple[Lane, ...]] = {}

    def chat_model(self, role: str) -> RoutedChat:
        if role == EMBED_ROLE:
            raise ModelUnavailable("the 'embed' role cannot answer chat requests")
        return RoutedChat(self, role)

    def pinned_chat_model(self, role: str, deployment: str) -> RoutedChat:
        """The `ChatModel` of one named deployment, for a run pinned to it.

        Calls go through that deployment's lane (retries, breaker, in-flight cap) exactly as
        routed ones do, but never fall back to another deployment: a pinned run is decided by
        the model it names or not at all.
        """
        lane = self.lanes.get(deployment)
        if lane is None or lane.deployment.is_embedding:
            raise ModelUnavailable(
                f"the run is pinned to deployment {deployment!r}, which is not a chat deployment "
                "of the active registry (see `garrison models list`)"
            )
        return RoutedChat(self, role, pinned=lane)

    def embedder(self) -> RoutedEmbedder:
        return RoutedEmbedder(self)

    def chain(self, role: str) -> tuple[Lane, ...]:
        if role not in self._chains:
            self._chains[role] = tuple(self.lanes[d.name] for d in self.registry.chain(role))
        return self._chains[role]

    def unserved(self, role: str) -> str:
        """Why nothing serves `role`, and how to change that."""
        return f"nothing serves role {role!r}: {self._hints.how_to_configure(role)}"

    async def health(self, timeout_s: float = PROBE_TIMEOUT_S) -> list[DeploymentHealth]:
        """Probe every deployment concurrently, in registry order."""
        return list(await asyncio.gather(*(probe(ln, timeout_s) for ln in self.lanes.values())))

    async def aclose(self) -> None:
        for lane in self.lanes.values():
            await lane.client.aclose()

    async def route(
        self,
        role: str,
        call: Callable[[OpenAICompatibleClient], Awaitable[T]],
        *,
        lanes: Sequence[Lane] | None = None,
    ) -> tuple[T, str]:
        """Run `call` against the first deployment of `role` that answers; (result, its name).
        `lanes` replaces the role's chain (a pinned deployment)."""
        chain = self.chain(role) if lanes is None else lanes
        if not chain:
            raise ModelUnavailable(self.unserved(role))
        deadline = asyncio.timeout(self.policy.deadline_s)
        try:
            async with deadline:
                return await self._walk(role, chain, call)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise ModelTimeout(
                f"role {role!r}: no deployment answered within the routing deadline "
                f"({self.policy.deadline_s:g} s)"
            ) from None

    async def _walk(
        self,
        role: str,
        chain: Sequence[Lane],
        call: Callable[[OpenAICompatibleClient], Awaitable[T]],
    ) -> tuple[T, str]:
        failures: list[str] = []
        busy = False
        timeouts = 0
        for lane in chain:
            # The cap is checked before the breaker: `allow` claims the half-open probe.
            if lane.in_flight >= lane.deployment.max_in_flight:
                busy = True
                failures.append(f"{lane.name}: {lane.in_flight} calls in flight (its cap)")
                continue
            if not lane.breaker.allow():
                failures.append(
                    f"{lane.name}: circuit open, next probe in {lane.breaker.retry_in_s:.0f} s"
                )
                continue
            lane.in_flight += 1
            try:
                return await self._attempts(lane, call), lane.name
            except (ModelTimeout, ModelUnavailable) as exc:
                timeouts += isinstance(exc, ModelTimeout)
                failures.append(f"{lane.name}: {exc.message}")
                # Operators need to see failovers that callers never notice.
                log.warning(
                    "role %r: deployment %s failed (%s: %s); circuit %s",
                    role, lane.name, exc.code, exc.message, lane.breaker.state.value,
                )  # fmt: skip
            finally:
                lane.in_flight -= 1
        summary = "; ".join(failures)
        if busy:
            raise ModelOverloaded(
                f"role {role!r}: every deployment is busy or down ({summary})",
                self.policy.overload_retry_after_s,
            )
        if timeouts and timeouts == len(failures):
            raise ModelTimeout(f"role {role!r}: no deployment answered in time ({summary})")
        raise ModelUnavailable(
            f"role {role!r}: no deployment could answer ({summary}); {self._hints.when_down(role)}"
        )

    async def _attempts(
        self, lane: Lane, call: Callable[[OpenAICompatibleClient], Awaitable[T]]
    ) -> T:
        attempt = 0
        while True:
            try:
                result = await call(lane.client)
            except ModelUnavailable:
                lane.breaker.failure()
                # A circuit that just opened (or a failed half-open probe) means: stop here.
                if attempt >= self.policy.retries or lane.breaker.state is not BreakerState.CLOSED:
                    raise
            except ModelTimeout:
                lane.breaker.failure()
                raise
            except ServingError as exc:
                # The engine answered, so it is up; what it answered is not ours to fix.
                lane.breaker.success()
                exc.deployment = lane.name
                raise
            except BaseException:
                lane.breaker.abandon()  # cancelled (the deadline, a client gone): no verdict
                raise
            else:
                lane.breaker.success()
                return result
            await self._sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        # Full jitter: callers that failed together must not retry together.
        ceiling = min(self.policy.backoff_cap_s, self.policy.backoff_base_s * 2**attempt)
        return self._rng.uniform(0.0, ceiling)


class RoutedChat:
    """The `ChatModel` for one role (or one pinned deployment); every call is routed afresh."""

    def __init__(self, router: Router, role: str, *, pinned: Lane | None = None) -> None:
        self._router = router
        self.role = role
        self._lanes = None if pinned is None else (pinned,)

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str = "action",
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> ChatResult:
        result, name = await self._router.route(
            self.role,
            lambda client: client.chat(
                messages,
                json_schema=json_schema,
                schema_name=schema_name,
                max_tokens=max_tokens,
                temperature=temperature,
            ),
            lanes=self._lanes,
        )
        return replace(result, deployment=name)


class RoutedEmbedder:
    """The `Embedder` for the `embed` role."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        result, name = await self._router.route(EMBED_ROLE, lambda client: client.embed(texts))
        return replace(result, deployment=name)
