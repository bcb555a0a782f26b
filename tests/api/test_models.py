"""`GET /v1/models`, and back-pressure: a busy embedder answers 503 with Retry-After at once."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from agent.runtime import Settings
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer
from tests.api.conftest import Serve, assert_error, bearer
from tests.conftest import TenantFixture
from tests.modelsfile import external, write_models_file
from tests.serving.conftest import closed_port_url

LOCAL_GPU = """\
[[deployments]]
name = "qwen"
model = "/models/private/Qwen3-8B"
roles = ["extract"]
engine_args = ["--max-model-len", "8192"]
capabilities = {{ context_length = 8192 }}
placement = {{ device = "gpu", gpus = [0, 1], port = {port} }}
"""


def with_models_file(settings: Settings, path: Path, timeout_s: float = 5.0) -> Settings:
    serving = ServingSettings(models_file=path, model_timeout_s=timeout_s)
    return settings.model_copy(update={"serving": serving})


async def test_models_lists_the_environment_deployments(
    client: httpx.AsyncClient, acme: TenantFixture, scripted_model: ScriptedModelServer
) -> None:
    response = await client.get("/v1/models", headers=bearer(acme.secret))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "data": [
            {
                "name": "chat",
                "roles": ["decide", "extract"],
                "placement": {"kind": "external", "device": "cpu", "gpus": []},
                "capabilities": {
                    "context_length": 2048,
                    "structured_output": True,
                    "embedding_dim": None,
                },
                "health": {"ok": True, "breaker": "closed"},
            },
            {
                "name": "embed",
                "roles": ["embed"],
                "placement": {"kind": "external", "device": "cpu", "gpus": []},
                "capabilities": {
                    "context_length": 2048,
                    "structured_output": True,
                    "embedding_dim": 384,
                },
                "health": {"ok": True, "breaker": "closed"},
            },
        ]
    }
    assert scripted_model.base_url.split("//")[1] not in response.text


async def test_models_shows_no_paths_urls_or_credentials(
    serve: Serve,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    port = int(closed_port_url().rsplit(":", 1)[1].split("/")[0])
    secret_url = scripted_model.base_url.replace("http://", "http://ops:s3cret@")
    path = tmp_path / "models.toml"
    path.write_text(
        external("remote", secret_url, ("decide",)) + "\n" + LOCAL_GPU.format(port=port)
    )
    base_url = serve(with_models_file(settings, path), database_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, trust_env=False) as http:
        response = await http.get("/v1/models", headers=bearer(acme.secret))
    assert response.status_code == 200, response.text
    remote, qwen = response.json()["data"]
    assert remote["health"] == {"ok": True, "breaker": "closed"}
    assert qwen["placement"] == {"kind": "local", "device": "gpu", "gpus": [0, 1]}
    assert qwen["capabilities"]["context_length"] == 8192
    assert qwen["health"]["ok"] is False  # no engine runs on its port
    for leak in ("s3cret", "ops:", "/models/", "127.0.0.1", str(port), "max-model-len"):
        assert leak not in response.text, leak


async def test_a_busy_embedder_answers_503_with_retry_after(
    serve: Serve,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    acme: TenantFixture,
    scripted_model: ScriptedModelServer,
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers: a call stays in flight
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        path = write_models_file(
            tmp_path / "models.toml",
            external("chat", scripted_model.base_url),
            external("vectors", hung, ("embed",), max_in_flight=1),
        )
        base_url = serve(with_models_file(settings, path, timeout_s=2.0), database_url)
        async with httpx.AsyncClient(base_url=base_url, timeout=20, trust_env=False) as http:

            async def post(title: str) -> httpx.Response:
                doc = {"title": title, "text": f"{title} is a document."}
                return await http.post("/v1/documents", json=doc, headers=bearer(acme.secret))

            first = asyncio.create_task(post("first"))
            await asyncio.sleep(0.3)  # let the first call take the embedder's only slot
            second = await post("second")
            assert not first.done()  # refused at once, not queued behind the hung call
            assert_error(second, 503, "model_overloaded")
            assert second.headers["retry-after"] == "1"
            assert "127.0.0.1" not in second.text
            assert_error(await first, 503, "model_timeout")
