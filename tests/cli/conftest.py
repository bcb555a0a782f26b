"""CLI tests run `garrison` in-process with typer's runner, against a fresh database per test.

Commands call `asyncio.run` themselves, so tests are plain sync functions; anything a test must
set up through the services (a run with steps, say) goes through `in_services`, which opens its
own `Services` on its own event loop, as a second process would. Long-running commands (`up`,
`serve`, `worker`) are started as real subprocesses by `Proc`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner, Result

from agent.domain import Run, RunStatus
from agent.runtime import Services, Settings, open_services
from ops.cli import app
from serving.testing.scripted import ScriptedModelServer
from tests.conftest import TenantFixture, make_tenant
from tests.outbox.conftest import put_effect_agent, send_email

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Cli:
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env, input=input)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (result.exit_code, result.output)
        return result

    def json(self, *args: str) -> Any:
        result = self.ok(*args, "--json")
        return json.loads(result.stdout)

    def fails(self, exit_code: int, code: str, *args: str) -> Result:
        """Run, expect `exit_code` and `error[code]` (checking the JSON form as well)."""
        result = self(*args)
        assert result.exit_code == exit_code, (result.exit_code, result.output)
        assert f"error[{code}]: " in result.stderr, result.stderr
        assert result.stdout == "" or code == "some_files_failed", result.stdout
        as_json = self(*args, "--json")
        assert as_json.exit_code == exit_code, as_json.output
        error = json.loads(as_json.stderr.strip().splitlines()[-1])["error"]
        assert error["code"] == code, error
        assert error["message"], error
        return result


@pytest.fixture(autouse=True)
def no_ambient_garrison_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GARRISON_* variable in the developer's shell must not leak into what is tested."""
    for name in list(os.environ):
        if name.startswith("GARRISON_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cli_env(
    database_url: str, scripted_model: ScriptedModelServer, tmp_path: Path
) -> dict[str, str]:
    return {
        "GARRISON_DATABASE_URL": database_url,
        "GARRISON_CHAT_URL": scripted_model.base_url,
        "GARRISON_EMBED_URL": scripted_model.base_url,
        "GARRISON_DATA_DIR": str(tmp_path / "data"),
        "GARRISON_MODEL_TIMEOUT_S": "5",
    }


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Cli:
    return Cli(cli_env)


def in_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run `work` against freshly opened services on a loop of its own."""

    async def go() -> T:
        assert settings.database.database_url is not None
        services = await open_services(settings, settings.database.database_url, upgrade=False)
        try:
            return await work(services)
        finally:
            await services.aclose()

    return asyncio.run(go())


def gated_email_run(
    settings: Settings,
    scripted_model: ScriptedModelServer,
    policy: str,
    *,
    others: tuple[str, ...] = (),
) -> Run:
    """acme's notifier waiting for approval of an email outside acme under `policy` (tenants
    `others` created beside it)."""

    async def gated(services: Services) -> Run:
        fx = await make_tenant(services, "acme")
        for name in others:
            await make_tenant(services, name)
        await put_effect_agent(services, "acme")
        await services.policies.apply("acme", None, policy, name="p.toml", actor="test")
        scripted_model.enqueue(send_email(["eve@partner.example"], "Quote", "100"))
        run = await services.runs.submit(fx.principal, "notifier", "quote eve")
        await services.worker().run_until_idle()
        return await services.runs.get(run.id, None)

    run = in_services(settings, gated)
    assert run.status is RunStatus.AWAITING_APPROVAL
    return run


def tenant(settings: Settings, name: str = "acme") -> TenantFixture:
    return in_services(settings, lambda s: make_tenant(s, name))


# -- subprocesses ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def subprocess_env(**garrison: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    # A `garrison up` under test must never install or start the real engines (minutes, GBs);
    # the engine tests do that on purpose.
    env["GARRISON_ENGINES"] = "off"
    env.update(garrison)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    """A `python -m ops.cli ...` subprocess with its output in files (no pipe to fill up)."""

    args: list[str]
    env: dict[str, str]
    logs: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copies of the descriptors; ours close at once.
        with (self.logs / "stdout").open("wb") as out, (self.logs / "stderr").open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
            )

    @property
    def stdout(self) -> str:
        return (self.logs / "stdout").read_text()

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr").read_text()

    def describe(self) -> str:
        return f"exit {self.popen.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.popen.poll() is not None:
                raise AssertionError(f"{what}: the process exited\n{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: timed out after {timeout} s\n{self.describe()}")
            time.sleep(0.1)

    def wait_http(self, url: str, timeout: float) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(answers, timeout, f"waiting for {url}")

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30) -> int:
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"did not stop within {timeout} s\n{self.describe()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str]) -> Proc:
        proc = Proc(list(args), env, tmp_path / f"proc{len(started)}")
        started.append(proc)
        return proc

    yield start
    for proc in started:  # a failed test must not leave a server behind
        proc.kill()


def poll_run(base_url: str, secret: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {secret}"}
    while True:
        body: dict[str, Any] = httpx.get(
            f"{base_url}/v1/runs/{run_id}", headers=headers, timeout=5
        ).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"run still {body['status']} after {timeout} s"
        time.sleep(0.1)
