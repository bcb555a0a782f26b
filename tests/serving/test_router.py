"""Routing by role over real HTTP: fallback, bounded retries with jitter, timeouts, and the
errors that are never retried or sent elsewhere."""

from __future__ import annotations

import socket

import pytest

from serving.errors import ModelHTTPError, ModelOutputError, ModelTimeout, ModelUnavailable
from serving.registry import Registry
from serving.registry_source import RegistrySource
from serving.router import Router
from serving.settings import ServingSettings
from serving.testing import ScriptedModelServer
from tests.serving.conftest import Harness, closed_port_url, ext

HELLO = [{"role": "user", "content": "hello"}]


def chats(server: ScriptedModelServer) -> int:
    return len(server.chat_requests)


async def test_primary_answers_and_the_result_names_it(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url), ext("fallback", fallback.base_url))
    primary.enqueue("from primary")
    result = await router.chat_model("decide").chat(HELLO)
    assert (result.content, result.deployment) == ("from primary", "primary")
    assert chats(fallback) == 0


async def test_primary_down_falls_back_and_names_the_fallback(
    harness: Harness, fallback: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", closed_port_url()), ext("fallback", fallback.base_url))
    fallback.enqueue("from fallback")
    result = await router.chat_model("decide").chat(HELLO)
    assert (result.content, result.deployment) == ("from fallback", "fallback")
    # A refused connection was retried twice, with full-jitter backoff, before falling back.
    assert len(harness.sleeps) == 2
    assert 0 <= harness.sleeps[0] <= 0.2
    assert 0 <= harness.sleeps[1] <= 0.4


async def test_unavailable_is_retried_a_bounded_number_of_times(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url), ext("fallback", fallback.base_url))
    for status in (503, 502, 504, 503):
        primary.enqueue_error(status, "loading")
    fallback.enqueue("from fallback")
    result = await router.chat_model("decide").chat(HELLO)
    assert result.deployment == "fallback"
    assert chats(primary) == 3  # one attempt and two retries, never the fourth
    assert primary.pending == 1
    assert chats(fallback) == 1


async def test_a_retry_that_succeeds_stays_on_the_primary(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url), ext("fallback", fallback.base_url))
    primary.enqueue_error(503, "loading")
    primary.enqueue("second try")
    result = await router.chat_model("decide").chat(HELLO)
    assert (result.content, result.deployment) == ("second try", "primary")
    assert len(harness.sleeps) == 1
    assert chats(fallback) == 0


async def test_backoff_is_jittered_and_capped(harness: Harness) -> None:
    dead = closed_port_url()
    sleeps = []
    for seed in (1, 2):
        harness.sleeps.clear()
        router = harness.router(
            ext("primary", dead),
            seed=seed,
            retries=6,
            backoff_base_s=0.1,
            backoff_cap_s=0.3,
            breaker_failures=100,
        )
        with pytest.raises(ModelUnavailable):
            await router.chat_model("decide").chat(HELLO)
        sleeps.append(list(harness.sleeps))
        assert len(harness.sleeps) == 6
        assert all(0 <= s <= 0.3 for s in harness.sleeps)
    assert sleeps[0] != sleeps[1]  # two callers failing together do not retry in step


async def test_timeout_falls_back_without_retrying(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(
        ext("primary", primary.base_url), ext("fallback", fallback.base_url), timeout_s=0.3
    )
    primary.enqueue("too late", delay_s=2.0)
    fallback.enqueue("in time")
    result = await router.chat_model("decide").chat(HELLO)
    assert result.deployment == "fallback"
    assert chats(primary) == 1
    assert harness.sleeps == []


async def test_every_deployment_timing_out_is_a_timeout(
    harness: Harness, primary: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url), timeout_s=0.3)
    primary.enqueue("too late", delay_s=2.0)
    with pytest.raises(ModelTimeout, match="role 'decide': no deployment answered in time"):
        await router.chat_model("decide").chat(HELLO)


async def test_the_routed_call_has_one_overall_deadline(harness: Harness) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        router = harness.router(ext("a", url), ext("b", url), timeout_s=30, deadline_s=0.3)
        with pytest.raises(ModelTimeout, match="routing deadline"):
            await router.chat_model("decide").chat(HELLO)
    # Cancelled by the deadline, the calls leave no verdict and no slot behind.
    assert [lane.in_flight for lane in router.lanes.values()] == [0, 0]


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_neither_retried_nor_failed_over(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer, status: int
) -> None:
    router = harness.router(ext("primary", primary.base_url), ext("fallback", fallback.base_url))
    primary.enqueue_error(status, "bad request")
    with pytest.raises(ModelHTTPError) as caught:
        await router.chat_model("decide").chat(HELLO)
    assert caught.value.status_code == status
    assert caught.value.deployment == "primary"
    assert (chats(primary), chats(fallback)) == (1, 0)
    assert harness.sleeps == []


async def test_unusable_output_is_the_callers_business(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(ext("primary", primary.base_url), ext("fallback", fallback.base_url))
    primary.enqueue_error(200, "this is not json")
    with pytest.raises(ModelOutputError) as caught:
        await router.chat_model("decide").chat(HELLO)
    assert caught.value.deployment == "primary"
    assert chats(fallback) == 0


async def test_routes_choose_the_order(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(
        ext("primary", primary.base_url, ("decide", "extract")),
        ext("fallback", fallback.base_url, ("decide", "extract")),
        routes={"extract": ("fallback", "primary")},
    )
    primary.set_responder(lambda _: "p")
    fallback.set_responder(lambda _: "f")
    assert (await router.chat_model("decide").chat(HELLO)).deployment == "primary"
    assert (await router.chat_model("extract").chat(HELLO)).deployment == "fallback"


async def test_embeddings_are_routed_too(
    harness: Harness, primary: ScriptedModelServer, fallback: ScriptedModelServer
) -> None:
    router = harness.router(
        ext("down", closed_port_url(), ("embed",)),
        ext("vectors", fallback.base_url, ("embed",)),
        ext("chat", primary.base_url),
    )
    result = await router.embedder().embed(["a", "b"])
    assert result.deployment == "vectors"
    assert [len(v) for v in result.vectors] == [384, 384]
    with pytest.raises(ModelUnavailable, match="'embed' role cannot answer chat"):
        router.chat_model("embed")


async def test_all_down_says_which_and_why(harness: Harness) -> None:
    router = harness.router(ext("a", closed_port_url()), ext("b", closed_port_url()), retries=0)
    with pytest.raises(ModelUnavailable) as caught:
        await router.chat_model("decide").chat(HELLO)
    message = str(caught.value)
    assert message.startswith("role 'decide': no deployment could answer (a: ")
    assert "; b: " in message
    assert "unreachable" in message
    assert message.endswith("; see `garrison models health`")


async def test_nothing_serves_the_role_says_how_to_configure_it() -> None:
    source = RegistrySource(Registry(deployments=()), "none", "no models configured")
    router = Router(source.registry, ServingSettings(), hints=source)
    try:
        with pytest.raises(ModelUnavailable) as decide:
            await router.chat_model("decide").chat(HELLO)
        assert "nothing serves role 'decide'" in str(decide.value)
        assert "GARRISON_CHAT_URL" in str(decide.value)
        assert "GARRISON_MODELS_FILE" in str(decide.value)
        with pytest.raises(ModelUnavailable, match="GARRISON_EMBED_URL"):
            await router.embedder().embed(["x"])
    finally:
        await router.aclose()


async def test_a_role_missing_from_a_models_file_names_the_file(
    harness: Harness, primary: ScriptedModelServer
) -> None:
    source = RegistrySource(
        Registry(deployments=(ext("chat", primary.base_url),)), "models_file", "models file m.toml"
    )
    router = Router(source.registry, ServingSettings(), hints=source)
    try:
        with pytest.raises(ModelUnavailable) as caught:
            await router.chat_model("extract").chat(HELLO)
        assert str(caught.value) == (
            "nothing serves role 'extract': add a deployment serving 'extract' to the "
            "models file m.toml"
        )
    finally:
        await router.aclose()
