"""Embedding throughput: the vLLM engine against in-process CPU embedders and sentence-transformers.

Every candidate embeds the same passages (bench/corpus.py `prose_chunks`: ~190 MiniLM tokens
each, as ingestion's 200-token chunks are) with the same model, the bundled all-MiniLM-L6-v2:

- sentence-transformers, plain loop: one `encode([text])` per text (the issue's baseline);
- sentence-transformers, batched: `encode(texts, batch_size=32)`;
- the vLLM CPU engine (`--runner pooling`, started here on a free port) through Garrison's own
  client, as ingestion calls it: requests of `embed_batch_size` (64) texts;
- ONNX Runtime in process (`serving.embedders`), float32 and int8, as the appliance runs it;
- ONNX Runtime int8 with every linear layer quantised, to show what the last bit of speed costs.

The machine is shared and its load moves, so candidates take turns: the passages are split into
rounds, and in each round every candidate embeds that round's slice. A candidate's rate is its
texts over its summed time; the spread is the slowest and fastest round. Cosine similarity is
taken against the engine's vectors (what is stored today) on the first passages: a replacement
must stay > 0.99 so that stored vectors remain comparable.

    .venv/bin/python -m bench.embedders [--texts 2000] [--rounds 4] [--no-engine]

sentence-transformers runs in the engine's venv (bench/st_worker.py): Garrison's has no torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.corpus import prose_chunks
from serving.client import embed_client
from serving.embedders.convert import Precision, convert, quantize
from serving.embedders.graph import activation_products, build
from serving.embedders.onnx import DEFAULT_BATCH, OnnxEmbedder
from serving.engine.bundled import MINILM, bundled_registry, minilm_dir
from serving.engine.environment import locate
from serving.engine.manager import EngineManager
from serving.engine.settings import EngineSettings
from serving.settings import ServingSettings

COSINE_TEXTS = 200
BASELINE = "sentence-transformers, plain loop"
CHOSEN = f"ONNX Runtime in process, int8 ({DEFAULT_BATCH}/batch)"
"""The appliance's default embedder on the bundled registry."""
Timed = tuple[float, list[list[float]]]


@dataclass
class Candidate:
    name: str
    run: Callable[[int, int], Awaitable[Timed]]
    """(start, end) -> (seconds, vectors of the first COSINE_TEXTS of them when start is 0)."""
    seconds: list[float] = field(default_factory=list)
    texts: list[int] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(self.texts) / sum(self.seconds)

    def spread(self) -> tuple[float, float]:
        rates = [n / s for n, s in zip(self.texts, self.seconds, strict=True)]
        return min(rates), max(rates)


class SentenceTransformersWorker:
    def __init__(self, python: Path, model: Path, texts_file: Path) -> None:
        script = Path(__file__).with_name("st_worker.py")
        self._proc = subprocess.Popen(
            [str(python), str(script), str(model), str(texts_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._read()  # {"ready": true} once the model is loaded

    async def run(self, mode: str, start: int, end: int) -> Timed:
        return await asyncio.to_thread(self._run, mode, start, end)

    def _run(self, mode: str, start: int, end: int) -> Timed:
        keep = COSINE_TEXTS if start == 0 else 0
        request = {"mode": mode, "start": start, "end": end, "vectors": keep}
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        return float(answer["seconds"]), answer["vectors"]

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise SystemExit("the sentence-transformers worker died (is the engine installed?)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


class Engine:
    """The bundled MiniLM deployment under vLLM, on a free port, for this benchmark only."""

    def __init__(self, python: Path, model: Path, state: Path) -> None:
        shared = EngineSettings()
        registry = bundled_registry(shared, minilm=model, chat_port=_free(), embed_port=_free())
        settings = EngineSettings(data_dir=state, engine_stop_grace_s=10)
        self._manager = EngineManager(registry, settings, python=python)
        self._deployment = next(d for d in self._manager.local if d.name == MINILM)

    @property
    def served_name(self) -> str:
        return self._deployment.served_name

    async def start(self) -> str:
        self._manager.start(self._deployment)
        print("starting the vLLM MiniLM engine (about a minute)...", flush=True)
        waited = await self._manager.wait_ready(self._deployment, timeout_s=900)
        print(f"engine ready after {waited:.0f} s", flush=True)
        return self._manager.url(self._deployment)

    def stop(self) -> None:
        self._manager.stop(self._deployment)


def _free() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def onnx_candidate(name: str, folder: Path, texts: list[str]) -> Candidate:
    embedder = OnnxEmbedder(folder, name=name, batch_size=DEFAULT_BATCH)
    embedder.embed_sync(texts[:4])

    async def run(start: int, end: int) -> Timed:
        began = time.perf_counter()
        vectors, _ = embedder.embed_sync(texts[start:end])
        return time.perf_counter() - began, vectors[:COSINE_TEXTS] if start == 0 else []

    return Candidate(name, run)


def full_int8(model: Path, into: Path) -> Path:
    """The int8 variant the appliance does not use: every linear layer quantised."""
    into.mkdir(parents=True, exist_ok=True)
    graph, shape = build(model)
    plain = into / "float32.onnx"
    onnx.save(graph, str(plain))
    quantize(plain, into / "model.onnx", activation_products(shape))
    plain.unlink()
    float_dir = into.parent / "float32"
    for name in ("tokenizer.json", "garrison-manifest.json"):
        (into / name).write_bytes((float_dir / name).read_bytes())
    return into


async def measure(candidates: list[Candidate], texts: list[str], rounds: int) -> None:
    size = len(texts) // rounds
    for r in range(rounds):
        start, end = r * size, (r + 1) * size
        for c in candidates:
            seconds, vectors = await c.run(start, end)
            c.seconds.append(seconds)
            c.texts.append(end - start)
            if vectors:
                c.vectors = vectors
            print(f"  round {r + 1}/{rounds} {c.name:<52} {(end - start) / seconds:7.1f} texts/s")


def cosines(a: list[list[float]], b: list[list[float]]) -> tuple[float, float]:
    x, y = np.asarray(a), np.asarray(b)
    n = min(len(x), len(y))
    sims = (x[:n] * y[:n]).sum(1) / np.linalg.norm(x[:n], axis=1) / np.linalg.norm(y[:n], axis=1)
    return float(sims.min()), float(sims.mean())


def report(candidates: list[Candidate], texts: list[str]) -> None:
    base = next(c for c in candidates if c.name == BASELINE)
    reference = next((c for c in candidates if c.name.startswith("vLLM")), base)
    words = statistics.mean(len(t.split()) for t in texts)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{len(texts)} passages of ~{words:.0f} words; cosine vs {reference.name}")
    print(f"load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    print(f"{'embedder':<56}{'texts/s':>9}{'rounds':>15}{'x loop':>8}{'cos min':>9}{'mean':>8}")
    for c in candidates:
        low, high = c.spread()
        cos_min, cos_mean = cosines(c.vectors, reference.vectors)
        print(
            f"{c.name:<56}{c.rate:>9.1f}{f'{low:.0f}-{high:.0f}':>15}"
            f"{c.rate / base.rate:>7.2f}x{cos_min:>9.4f}{cos_mean:>8.4f}"
        )


async def compare(
    texts: list[str], rounds: int, *, engine: bool = True, variants: bool = True
) -> list[Candidate]:
    """The candidates, measured on `texts` taking turns over `rounds`. Without `variants`, only
    the issue's baseline (the plain loop) and the appliance's choice (CHOSEN)."""
    shared = EngineSettings()
    env = locate(shared)
    python = env.require()
    model = minilm_dir(env)
    work = Path(tempfile.mkdtemp(prefix="garrison-embedders-"))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    onnx_root = shared.models_dir / "minilm-onnx"
    precisions = list(Precision) if variants else [Precision.INT8]
    folders = {p: convert(model, onnx_root / p.value, p).path for p in precisions}
    worker = SentenceTransformersWorker(python, model, texts_file)
    started = Engine(python, model, work / "engine") if engine else None
    client = None
    try:
        candidates = [Candidate(BASELINE, lambda s, e: worker.run("loop", s, e))]
        if variants:
            candidates.append(
                Candidate(
                    "sentence-transformers, batched (32)", lambda s, e: worker.run("batch", s, e)
                )
            )
        if started is not None:
            url = await started.start()
            client = embed_client(ServingSettings(embed_url=url, embed_model=started.served_name))
            await client.embed(texts[:4])
            candidates.append(
                Candidate(
                    "vLLM CPU engine via Garrison's client (64/request)", _engine_run(client, texts)
                )
            )
        if variants:
            candidates.append(
                onnx_candidate(
                    f"ONNX Runtime in process, float32 ({DEFAULT_BATCH}/batch)",
                    folders[Precision.FLOAT32],
                    texts,
                )
            )
        candidates.append(onnx_candidate(CHOSEN, folders[Precision.INT8], texts))
        if variants:
            full = full_int8(model, onnx_root / "int8-all-linears")
            candidates.append(
                onnx_candidate("ONNX int8, every linear quantised (not used)", full, texts)
            )
        await measure(candidates, texts, rounds)
        return candidates
    finally:
        worker.close()
        if client is not None:
            await client.aclose()
        if started is not None:
            started.stop()
        shutil.rmtree(work, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    texts = prose_chunks(args.texts)
    report(await compare(texts, args.rounds, engine=not args.no_engine), texts)


def _engine_run(client: Any, texts: list[str]) -> Callable[[int, int], Awaitable[Timed]]:
    async def run(start: int, end: int) -> Timed:
        began = time.perf_counter()
        result = await client.embed(texts[start:end])
        return time.perf_counter() - began, result.vectors[:COSINE_TEXTS] if start == 0 else []

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-engine", action="store_true", help="skip the vLLM engine")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
