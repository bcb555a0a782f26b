"""The real vLLM CPU engines, once per session: installed (idempotent), the GGUF imported
(cached after the first time), both bundled engines started on free ports, stopped at the end.

The engine's venv and the imported model live in the real data directory (GARRISON_DATA_DIR or
~/.local/share/garrison), so a machine pays the install once; pid files and logs go to a
temporary directory, so the tests never touch engines an operator started.

These tests run only when asked for (`pytest -m engine tests/engine`): a fresh machine spends
minutes installing and loading before the first one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serving.engine.bundled import GEMMA, MINILM, bundled_registry, gemma_dir, minilm_dir
from serving.engine.environment import install, locate
from serving.engine.gguf import import_gguf
from serving.engine.manager import EngineManager
from serving.engine.settings import EngineSettings
from serving.registry import Deployment

MEASURED: dict[str, float | str] = {}
"""Figures worth reading in the CI log: printed in the terminal summary."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "engine" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(
        reason="starts the real vLLM engine: run `pytest -m engine tests/engine`"
    )
    for item in items:
        if item.get_closest_marker("engine"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.write_sep("-", "engine measurements")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key}: {value}")


class Narrator:
    """Progress lines straight to the terminal: installing and loading take minutes, and
    pytest would otherwise hold them back until the end (or show nothing at all)."""

    def __init__(self, config: pytest.Config) -> None:
        self._capture = config.pluginmanager.getplugin("capturemanager")

    def __call__(self, line: str) -> None:
        if self._capture is None:
            print(f"[engine] {line}", file=sys.stderr, flush=True)
            return
        with self._capture.global_and_fixture_disabled():
            print(f"[engine] {line}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Engines:
    manager: EngineManager
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gemma(self) -> Deployment:
        deployment = self.manager.registry.get(GEMMA)
        assert deployment is not None
        return deployment

    @property
    def minilm(self) -> Deployment:
        deployment = self.manager.registry.get(MINILM)
        assert deployment is not None
        return deployment

    def url(self, deployment: Deployment) -> str:
        return self.manager.url(deployment)


@pytest.fixture(scope="session")
def engines(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Engines]:
    say = Narrator(pytestconfig)
    shared = EngineSettings()
    env = locate(shared)
    report = install(env, say)
    MEASURED["engine install (s)"] = round(report.seconds, 1)
    MEASURED["engine install"] = "fresh" if report.changed else "already installed (checked)"
    imported = import_gguf(env, gemma_dir(shared), say)
    MEASURED["gguf import (s)"] = round(imported.seconds, 1)
    MEASURED["gguf import"] = "cached (verified)" if imported.cached else "converted"
    registry = bundled_registry(
        shared, minilm=minilm_dir(env), chat_port=free_port(), embed_port=free_port()
    )
    state = EngineSettings(data_dir=tmp_path_factory.mktemp("engines"), engine_stop_grace_s=10)
    manager = EngineManager(registry, state, python=env.python)
    engines = Engines(manager)
    try:
        for deployment in manager.local:
            manager.start(deployment)
        asyncio.run(_wait_all(engines, say))
        yield engines
    finally:
        for deployment in manager.local:
            manager.stop(deployment)
        (state.data_dir / "measurements.json").write_text(json.dumps(MEASURED, indent=2))


async def _wait_all(engines: Engines, say: Narrator) -> None:
    started = time.perf_counter()

    async def one(deployment: Deployment) -> None:
        waited = await engines.manager.wait_ready(deployment, timeout_s=900, progress=say)
        engines.timings[deployment.name] = waited
        MEASURED[f"{deployment.name} ready after (s, both loading at once)"] = round(waited, 1)

    await asyncio.gather(*(one(d) for d in engines.manager.local))
    say(f"both engines ready in {time.perf_counter() - started:.0f} s")


def log_tail(engines: Engines, deployment: Deployment) -> str:
    log = Path(engines.manager.files(deployment).log)
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
