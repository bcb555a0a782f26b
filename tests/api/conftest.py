"""API tests speak real HTTP to a real uvicorn serving `create_app`.

The server runs in a thread with its own event loop and opens its own `Services` there (the
async engine belongs to the loop that uses it); tests set up tenants, keys and documents and
drive the worker through the `services` fixture on the test's loop, against the same database.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from agent.api.app import create_app
from agent.runtime import Settings

STARTUP_TIMEOUT_S = 15.0


class Serve(Protocol):
    """Start an app for (settings, database URL) and return its base URL; stopped at teardown.

    `customize` may add test-only routes to the app before it starts.
    """

    def __call__(
        self, settings: Settings, url: str, *, customize: Callable[[FastAPI], None] | None = None
    ) -> str: ...


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread, so in this one it leaves the
    # test runner's alone; `server.run` makes and closes the thread's own event loop.
    thread = threading.Thread(target=server.run, name="garrison-api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("uvicorn did not start in time")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def serve() -> Iterator[Serve]:
    with contextlib.ExitStack() as stack:

        def start(
            settings: Settings, url: str, *, customize: Callable[[FastAPI], None] | None = None
        ) -> str:
            app = create_app(settings, url)
            if customize is not None:
                customize(app)
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def base_url(serve: Serve, settings: Settings, database_url: str) -> str:
    return serve(settings, database_url)


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy configured in the environment must not sit between test and app.
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0, trust_env=False) as http:
        yield http


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error schema with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert set(error) <= {"code", "message", "request_id", "details"}
    return error
