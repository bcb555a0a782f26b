"""Dependencies failing: the API answers 503 (or 502) with a code and Retry-After, never a 500
or a hang, and the probes say which component is down without saying why."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx
import pytest

from agent.runtime import Services, Settings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import Serve, assert_error, bearer
from tests.conftest import PgCluster, TenantFixture, drop_database

DOC = {"title": "Leave policy", "text": "Employees get 30 days of annual leave."}


def with_embed_url(settings: Settings, url: str, timeout_s: float | None = None) -> Settings:
    update: dict[str, object] = {"embed_url": url}
    if timeout_s is not None:
        update["model_timeout_s"] = timeout_s
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=update)})


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def get(base_url: str, path: str, secret: str | None = None) -> httpx.Response:
    headers = bearer(secret) if secret else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=20.0, trust_env=False) as client:
        return await client.get(path, headers=headers)


async def post_document(base_url: str, tenant: TenantFixture) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=20.0, trust_env=False) as client:
        return await client.post("/v1/documents", json=DOC, headers=bearer(tenant.secret))


def components(response: httpx.Response) -> dict[str, str]:
    return {d["loc"][0]: d["msg"] for d in response.json()["error"]["details"]}


async def test_ready_when_everything_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert {c["name"]: c["status"] for c in body["components"]} == {
        "database": "ok",
        "chat_model": "ok",
        "embed_model": "ok",
    }


async def test_embed_endpoint_down_is_503(
    serve: Serve, settings: Settings, database_url: str, acme: TenantFixture
) -> None:
    base_url = serve(with_embed_url(settings, closed_port_url()), database_url)
    response = await post_document(base_url, acme)
    error = assert_error(response, 503, "model_unavailable")
    assert response.headers["retry-after"] == "5"
    assert "127.0.0.1" not in error["message"]

    ready = await get(base_url, "/readyz")
    assert_error(ready, 503, "not_ready")
    assert ready.headers["retry-after"] == "5"
    assert components(ready) == {"database": "ok", "chat_model": "ok", "embed_model": "unavailable"}
    assert "127.0.0.1" not in ready.text


async def test_hung_embed_endpoint_is_503_timeout(
    serve: Serve, settings: Settings, database_url: str, acme: TenantFixture
) -> None:
    with black_hole() as url:
        base_url = serve(with_embed_url(settings, url, timeout_s=0.5), database_url)
        response = await post_document(base_url, acme)
    assert_error(response, 503, "model_timeout")
    assert response.headers["retry-after"] == "5"


async def test_embed_endpoint_refusing_is_502(
    serve: Serve,
    settings: Settings,
    database_url: str,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    # The scripted server answers 404 under this prefix: an HTTP error that is not "down".
    broken = with_embed_url(settings, f"{scripted_model.base_url}/wrong-prefix")
    response = await post_document(serve(broken, database_url), acme)
    assert_error(response, 502, "model_http_error")


async def test_model_server_stopping_makes_the_api_not_ready(
    client: httpx.AsyncClient, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    assert (await client.get("/readyz")).status_code == 200
    scripted_model.stop()

    ready = await client.get("/readyz")
    assert_error(ready, 503, "not_ready")
    assert components(ready) == {
        "database": "ok",
        "chat_model": "unavailable",
        "embed_model": "unavailable",
    }
    response = await client.post("/v1/documents", json=DOC, headers=bearer(acme.secret))
    assert_error(response, 503, "model_unavailable")
    # Runs are only queued by the API; the model is the worker's problem.
    run = {"agent": "assistant", "input": "hello"}
    assert (await client.post("/v1/runs", json=run, headers=bearer(acme.secret))).status_code == 202
    assert (await client.get("/healthz")).status_code == 200


async def test_missing_database_is_503(
    serve: Serve, settings: Settings, pg_cluster: PgCluster
) -> None:
    base_url = serve(settings, pg_cluster.url_for("garrison_no_such_database"))
    assert (await get(base_url, "/healthz")).json() == {"status": "ok"}

    response = await get(base_url, "/v1/runs", "gk_any-key-at-all")
    assert_error(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "5"
    assert "garrison_no_such_database" not in response.text

    ready = await get(base_url, "/readyz")
    assert_error(ready, 503, "not_ready")
    assert components(ready)["database"] == "unavailable"


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/documents", "/readyz"])
async def test_database_dropped_mid_test_is_503(
    client: httpx.AsyncClient,
    services: Services,
    acme: TenantFixture,
    pg_cluster: PgCluster,
    database_url: str,
    path: str,
) -> None:
    assert (await client.get(path, headers=bearer(acme.secret))).status_code == 200
    drop_database(pg_cluster, database_url.partition("?")[0].rsplit("/", 1)[1])

    response = await client.get(path, headers=bearer(acme.secret))
    code = "not_ready" if path == "/readyz" else "database_unavailable"
    assert_error(response, 503, code)
