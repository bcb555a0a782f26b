"""How transport failures and HTTP statuses become typed serving errors."""

from __future__ import annotations

import pickle
import socket
import threading
from collections.abc import Iterator

import pytest

from serving.client import OpenAICompatibleClient, chat_client
from serving.errors import (
    ModelHTTPError,
    ModelOutputError,
    ModelTimeout,
    ModelUnavailable,
    ServingError,
)
from serving.settings import ServingSettings
from serving.testing import ScriptedModelServer
from serving.types import Message
from tests.serving.conftest import API_KEY

MESSAGES: list[Message] = [{"role": "user", "content": "ping?"}]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def hangup_url() -> Iterator[str]:
    """An endpoint that accepts a connection, reads the request and closes without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed: test over
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    listener.shutdown(socket.SHUT_RDWR)  # close() alone does not wake a blocked accept()
    listener.close()
    thread.join(timeout=5)


async def test_deadline_passing_is_model_timeout(server: ScriptedModelServer) -> None:
    server.enqueue("too late", delay_s=2.0)
    async with OpenAICompatibleClient(server.base_url, model="m", timeout_s=0.2) as client:
        with pytest.raises(ModelTimeout, match="deadline") as caught:
            await client.chat(MESSAGES)
    assert caught.value.code == "model_timeout"


async def test_unused_port_is_model_unavailable() -> None:
    async with OpenAICompatibleClient(
        f"http://127.0.0.1:{unused_port()}/v1", model="m", timeout_s=2.0
    ) as client:
        with pytest.raises(ModelUnavailable, match="unreachable") as caught:
            await client.chat(MESSAGES)
    assert caught.value.code == "model_unavailable"


async def test_stopped_server_is_model_unavailable(server: ScriptedModelServer) -> None:
    server.enqueue("before")
    async with OpenAICompatibleClient(server.base_url, model="m", timeout_s=2.0) as client:
        assert (await client.chat(MESSAGES)).content == "before"
        server.stop()  # the client still holds a pooled keep-alive connection
        with pytest.raises(ModelUnavailable):
            await client.chat(MESSAGES)
        with pytest.raises(ModelUnavailable):
            await client.ping()


async def test_connection_closed_before_answer_is_model_unavailable(hangup_url: str) -> None:
    async with OpenAICompatibleClient(hangup_url, model="m", timeout_s=2.0) as client:
        with pytest.raises(ModelUnavailable, match="unreachable"):
            await client.chat(MESSAGES)


async def test_url_without_scheme_is_model_unavailable() -> None:
    async with OpenAICompatibleClient("127.0.0.1:9/v1", model="m") as client:
        with pytest.raises(ModelUnavailable, match="invalid"):
            await client.ping()


def test_empty_base_url_is_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="not configured"):
        OpenAICompatibleClient("", model="m")


def test_unconfigured_settings_are_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="GARRISON_CHAT_URL"):
        chat_client(ServingSettings(chat_url=None))


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_statuses_are_model_unavailable(
    server: ScriptedModelServer, client: OpenAICompatibleClient, status: int
) -> None:
    server.enqueue_error(status, '{"error": {"message": "engine loading"}}')

    with pytest.raises(ModelUnavailable, match=f"HTTP {status}.*engine loading"):
        await client.chat(MESSAGES)


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500])
async def test_other_statuses_are_model_http_error(
    server: ScriptedModelServer, client: OpenAICompatibleClient, status: int
) -> None:
    server.enqueue_error(status, "x" * 2000)

    with pytest.raises(ModelHTTPError) as caught:
        await client.chat(MESSAGES)

    err = caught.value
    assert (err.status_code, err.code) == (status, "model_http_error")
    assert err.body_excerpt == "x" * 500
    assert str(err) == f"model endpoint answered HTTP {status}: {'x' * 500}"


async def test_empty_queue_is_http_500_with_explanation(
    client: OpenAICompatibleClient,
) -> None:
    with pytest.raises(ModelHTTPError, match="no queued answer") as caught:
        await client.chat(MESSAGES)
    assert caught.value.status_code == 500


async def test_api_key_never_appears_in_messages(
    server: ScriptedModelServer, client: OpenAICompatibleClient
) -> None:
    server.enqueue_error(401, f"invalid token Bearer {API_KEY}")
    server.enqueue_error(503, f"upstream said {API_KEY}")
    server.enqueue_error(200, f"<html>{API_KEY}</html>")

    errors: list[ServingError] = []
    for _ in range(3):
        with pytest.raises(ServingError) as caught:
            await client.chat(MESSAGES)
        errors.append(caught.value)

    assert [type(e) for e in errors] == [ModelHTTPError, ModelUnavailable, ModelOutputError]
    for err in errors:
        assert API_KEY not in str(err)
        assert "[redacted]" in str(err)


def test_credentials_in_url_stay_out_of_messages() -> None:
    client = OpenAICompatibleClient("http://admin:hunter2@127.0.0.1:9/v1", model="m")
    err = client._http.transport_error(ConnectionRefusedError("refused"))
    assert "hunter2" not in str(err)
    assert "http://127.0.0.1:9/v1" in str(err)


def test_errors_have_stable_codes_and_pickle() -> None:
    errors: list[ServingError] = [
        ModelUnavailable("down"),
        ModelTimeout("slow"),
        ModelHTTPError(418, "teapot"),
        ModelOutputError("garbage"),
    ]
    assert [e.code for e in errors] == [
        "model_unavailable",
        "model_timeout",
        "model_http_error",
        "model_output_invalid",
    ]
    for err in errors:
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err)
        assert (str(clone), clone.message) == (str(err), err.message)
    http_clone = pickle.loads(pickle.dumps(errors[2]))
    assert (http_clone.status_code, http_clone.body_excerpt) == (418, "teapot")
