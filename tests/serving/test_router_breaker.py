"""The circuit breaker (open, half-open probe, close), the per-deployment in-flight cap, and the
router's health report."""

from __future__ import annotations

import asyncio

import pytest

from serving.breaker import BreakerState, CircuitBreaker
from serving.errors import ModelOverloaded
from serving.router import Router
from serving.testing import ScriptedModelServer
from tests.serving.conftest import FakeClock, Harness, closed_port_url, ext

HELLO = [{"role": "user", "content": "hello"}]


def chats(server: ScriptedModelServer) -> int:
    return len(server.chat_requests)


def breaker_router(harness: Harness, primary: str, fallback: str) -> Router:
    return harness.router(
        ext("primary", primary),
        ext("fallback", fallback),
        retries=0,
        breaker_failures=3,
        breaker_cooldown_s=30.0,
    )


async def test_circuit_opens_after_n_failures_and_skips_the_primary(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = breaker_router(harness, primary.base_url, fallback.base_url)
    fallback.set_responder(lambda _: "from fallback")
    for _ in range(5):
        primary.enqueue_error(503, "down")
    chat = router.chat_model("decide")
    for _ in range(3):
        assert (await chat.chat(HELLO)).deployment == "fallback"
    assert chats(primary) == 3
    assert router.lanes["primary"].breaker.state is BreakerState.OPEN

    for _ in range(4):  # while open, the primary is not contacted at all
        assert (await chat.chat(HELLO)).deployment == "fallback"
    assert chats(primary) == 3
    [health] = [h for h in await router.health() if h.name == "primary"]
    assert health.breaker == "open"


async def test_half_open_probe_closes_on_success(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = breaker_router(harness, primary.base_url, fallback.base_url)
    fallback.set_responder(lambda _: "from fallback")
    for _ in range(3):
        primary.enqueue_error(503, "down")
    chat = router.chat_model("decide")
    for _ in range(3):
        await chat.chat(HELLO)
    breaker = router.lanes["primary"].breaker
    harness.clock.now += 29.0
    assert breaker.state is BreakerState.OPEN
    assert (await chat.chat(HELLO)).deployment == "fallback"

    harness.clock.now += 1.0  # the cooldown has passed: one probe goes to the primary
    assert breaker.state is BreakerState.HALF_OPEN
    primary.enqueue("recovered")
    result = await chat.chat(HELLO)
    assert (result.content, result.deployment) == ("recovered", "primary")
    assert breaker.state is BreakerState.CLOSED
    primary.enqueue("again")
    assert (await chat.chat(HELLO)).deployment == "primary"
    assert chats(primary) == 5


async def test_failed_probe_reopens_for_another_cooldown(
    harness: Harness, fallback: ScriptedModelServer
) -> None:
    router = breaker_router(harness, closed_port_url(), fallback.base_url)
    fallback.set_responder(lambda _: "from fallback")
    chat = router.chat_model("decide")
    for _ in range(3):
        await chat.chat(HELLO)
    breaker = router.lanes["primary"].breaker
    harness.clock.now += 30.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert (await chat.chat(HELLO)).deployment == "fallback"  # the probe failed
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in_s == pytest.approx(30.0)


def test_breaker_lets_one_probe_through_at_a_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown_s=10.0, clock=clock)
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED  # one failure is not a pattern
    breaker.success()
    breaker.failure()
    assert breaker.allow()  # success reset the count
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.now += 10.0
    assert breaker.allow()
    assert not breaker.allow()  # the probe is out; everyone else waits for its verdict
    breaker.abandon()  # the probe was cancelled without a verdict
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0)


async def test_at_its_cap_a_deployment_answers_overloaded_at_once(
    harness: Harness, primary: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url, max_in_flight=1))
    primary.enqueue("slow answer", delay_s=1.0)
    chat = router.chat_model("decide")
    slow = asyncio.create_task(chat.chat(HELLO))
    while router.lanes["primary"].in_flight == 0:
        await asyncio.sleep(0.005)

    with pytest.raises(ModelOverloaded) as caught:
        await chat.chat(HELLO)
    assert not slow.done()  # refused while the first call was still in flight, not queued
    assert caught.value.code == "model_overloaded"
    assert caught.value.retry_after_s > 0
    assert "primary: 1 calls in flight (its cap)" in str(caught.value)
    [health] = await router.health()
    assert health.in_flight == 1

    assert (await slow).content == "slow answer"
    assert router.lanes["primary"].in_flight == 0
    assert chats(primary) == 1  # the refused call never reached the engine


async def test_a_busy_primary_overflows_to_the_fallback(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(
        ext("primary", primary.base_url, max_in_flight=1), ext("fallback", fallback.base_url)
    )
    primary.enqueue("slow answer", delay_s=0.5)
    fallback.enqueue("overflow")
    chat = router.chat_model("decide")
    slow = asyncio.create_task(chat.chat(HELLO))
    while router.lanes["primary"].in_flight == 0:
        await asyncio.sleep(0.005)
    assert (await chat.chat(HELLO)).deployment == "fallback"
    assert (await slow).deployment == "primary"


async def test_health_reports_each_deployment_without_credentials(
    harness: Harness, primary: ScriptedModelServer
) -> None:
    with_credentials = primary.base_url.replace("http://", "http://user:s3cret@")
    router = harness.router(
        ext("up", with_credentials, ("decide", "extract")),
        ext("down", closed_port_url(), ("embed",)),
    )
    up, down = await router.health(timeout_s=1.0)
    assert (up.name, up.ok, up.detail, up.kind) == ("up", True, "reachable", "external")
    assert up.roles == ("decide", "extract")
    assert up.url == primary.base_url
    assert (up.breaker, up.in_flight) == ("closed", 0)
    assert (down.name, down.ok, down.breaker) == ("down", False, "closed")
    assert down.detail.startswith("model_unavailable: ")
    assert "s3cret" not in repr(await router.health())
