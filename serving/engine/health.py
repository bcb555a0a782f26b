"""Is an engine answering? The readiness wait after a start, and the one-shot health check
used for every deployment, local or external.

An engine is ready when `GET /health` answers 200 *and* `GET /v1/models` lists the served
name: vLLM opens its port before the model is loaded, and a different server on the same port
must not pass for ours.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from serving.engine.errors import EngineNotReady, EngineStartFailed
from serving.engine.process import EngineFiles, EngineRecord, alive, tail
from serving.engine.streaming import Progress, quiet

POLL_S = 1.0
SAY_EVERY_S = 10.0
PROBE_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 25


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str


async def check(
    base_url: str, served_name: str, *, vllm: bool = True, timeout_s: float = PROBE_TIMEOUT_S
) -> Health:
    """One look at an OpenAI-compatible endpoint (`base_url` ends in /v1). `/health` is vLLM's
    own; other servers (`vllm=False`) are asked for their model list only."""
    root = base_url.rstrip("/").removesuffix("/v1")
    # trust_env=False: a proxy configured for the internet must not see loopback traffic.
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
        try:
            if vllm:
                health = await http.get(f"{root}/health")
                if health.status_code != 200:
                    return Health(False, f"/health answered HTTP {health.status_code}")
            models = await http.get(f"{base_url.rstrip('/')}/models")
        except httpx.HTTPError as exc:
            return Health(False, f"not answering ({type(exc).__name__})")
    if models.status_code != 200:
        return Health(False, f"/v1/models answered HTTP {models.status_code}")
    try:
        served = [str(item["id"]) for item in models.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return Health(False, "/v1/models answered something that is not a model list")
    if served_name not in served:
        return Health(False, f"serves {served}, not {served_name!r}")
    return Health(True, "ready")


async def wait_ready(
    files: EngineFiles,
    record: EngineRecord,
    served_name: str,
    *,
    timeout_s: float,
    progress: Progress = quiet,
) -> float:
    """Poll until the engine is ready; return the seconds waited.

    Fails early with EngineStartFailed and the log's tail if the process dies (a bad flag or a
    missing model fails in seconds, not at the deadline), and with EngineNotReady at the deadline.
    """
    started = time.monotonic()
    last_said = started
    url = f"http://127.0.0.1:{record.port}/v1"
    while True:
        if not alive(record):
            raise EngineStartFailed(
                f"{files.name} exited before it was ready; last lines of {files.log}:\n"
                + "\n".join(tail(files.log, LOG_TAIL_LINES))
            )
        health = await check(url, served_name, timeout_s=min(PROBE_TIMEOUT_S, timeout_s))
        now = time.monotonic()
        if health.ok:
            return now - started
        if now - started >= timeout_s:
            raise EngineNotReady(
                f"{files.name} did not become ready within {timeout_s:.0f} s ({health.detail}); "
                f"it keeps running: see {files.log} or `garrison models logs {files.name}`"
            )
        if now - last_said >= SAY_EVERY_S:
            progress(f"waiting for {files.name} ... {now - started:.0f} s")
            last_said = now
        await asyncio.sleep(POLL_S)
