"""Engine processes end to end with a stand-in server: start detached, wait for readiness, see a
crash early, stop, and the supervisor's restart. Seconds, no vLLM.

The stand-in is a "python" that accepts vLLM's command line and answers `/health` and
`/v1/models` like the real server; FAKE_ENGINE_FAIL makes it die at start with a message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

from serving.engine import process
from serving.engine.errors import EngineStartFailed
from serving.engine.manager import EngineManager
from serving.engine.settings import EngineSettings
from serving.engine.supervisor import Supervisor
from serving.registry import Capabilities, Deployment, Placement, Registry

FAKE_SERVER = """
import http.server, json, os, sys
args = sys.argv[sys.argv.index("-m") + 2:]
opts = dict(zip(args[::2], args[1::2]))
if os.environ.get("FAKE_ENGINE_FAIL"):
    print("fake engine: refusing to start", file=sys.stderr, flush=True)
    sys.exit(3)
assert os.environ["HF_HUB_OFFLINE"] == "1"
name = opts["--served-model-name"]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": name}]}).encode() if self.path == "/v1/models" else b""
        self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("fake engine listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(opts["--port"])), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    server = tmp_path / "fake_server.py"
    server.write_text(FAKE_SERVER)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {server} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def manager_for(tmp_path: Path, python: Path, **env: str) -> EngineManager:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    deployment = Deployment(
        name="tiny",
        model=str(model),
        roles=("decide",),
        capabilities=Capabilities(context_length=512),
        placement=Placement(kind="local", port=free_port()),
    )
    base = {"PATH": os.environ.get("PATH", "/usr/bin"), **env}
    return EngineManager(
        Registry(deployments=(deployment,)),
        EngineSettings(data_dir=tmp_path / "data", engine_stop_grace_s=5),
        python=python,
        base_env=base,
    )


async def test_an_engine_starts_detached_answers_and_stops(
    tmp_path: Path, fake_python: Path
) -> None:
    manager = manager_for(tmp_path, fake_python)
    (tiny,) = manager.local
    record, started = manager.start(tiny)
    try:
        assert started
        assert os.getpgid(record.pid) == record.pid  # its own session and group
        assert await manager.wait_ready(tiny, timeout_s=20) < 20
        assert (await manager.health(tiny)).ok
        assert manager.status(tiny).state == "running"
        assert manager.start(tiny) == (record, False)  # already running: left alone
        saved = process.EngineFiles(manager.settings.engines_dir, "tiny").read()
        assert saved == record
        assert record.command[:3] == [str(fake_python), "-m", "vllm.entrypoints.openai.api_server"]
    finally:
        assert manager.stop(tiny)
    assert manager.status(tiny).state == "stopped"
    assert not manager.stop(tiny)
    assert any("fake engine listening" in line for line in process.tail(Path(record.log), 5))


async def test_an_engine_that_dies_at_start_fails_fast_with_its_log(
    tmp_path: Path, fake_python: Path
) -> None:
    manager = manager_for(tmp_path, fake_python, FAKE_ENGINE_FAIL="1")
    (tiny,) = manager.local
    manager.start(tiny)
    with pytest.raises(EngineStartFailed, match="refusing to start") as failure:
        await manager.wait_ready(tiny, timeout_s=60)
    assert "exited before it was ready" in failure.value.message
    assert manager.status(tiny).state == "dead"
    manager.stop(tiny)


async def test_a_port_in_use_is_reported_before_starting(tmp_path: Path, fake_python: Path) -> None:
    manager = manager_for(tmp_path, fake_python)
    (tiny,) = manager.local
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", manager.ports["tiny"]))
        holder.listen()
        with pytest.raises(EngineStartFailed, match="already in use"):
            manager.start(tiny)


async def test_the_supervisor_restarts_a_killed_engine_with_backoff(
    tmp_path: Path, fake_python: Path
) -> None:
    manager = manager_for(tmp_path, fake_python)
    (tiny,) = manager.local
    manager.start(tiny)
    await manager.wait_ready(tiny, timeout_s=20)
    supervisor = Supervisor(manager, max_restarts=2, backoff_s=0.05, poll_s=0.05)
    watcher = asyncio.create_task(supervisor.run())
    try:
        for round_ in (1, 2):
            before = manager.status(tiny).record
            assert before is not None
            os.kill(before.pid, signal.SIGKILL)
            async with asyncio.timeout(20):
                while (
                    supervisor.watches["tiny"].total_restarts < round_
                    or not (await manager.health(tiny)).ok
                ):
                    await asyncio.sleep(0.05)
            after = manager.status(tiny).record
            assert after is not None
            assert after.pid != before.pid
        watch = supervisor.watches["tiny"]
        assert watch.events[0] == "tiny died; restart 1 of 2 in 0 s"
        # A third crash in a row exhausts the budget: the supervisor gives up and says so.
        last = manager.status(tiny).record
        assert last is not None
        os.kill(last.pid, signal.SIGKILL)
        async with asyncio.timeout(20):
            while not watch.gave_up:
                await asyncio.sleep(0.05)
        assert "gave up after 2 restarts" in watch.events[-1]
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        manager.stop(tiny)
