"""A synthetic corpus for bench/retrieval.py, a stand-in embedder, and timers for the store.

Documents are Markdown with ten sections each, so every section becomes one chunk (headings
always start a chunk), with metadata that selects 1% (`p1`) and 10% (`p10`) of them.

Vectors come from a mixture of 400 Gaussian clusters in 384 dimensions (unit-normalised),
seeded from the text, so the same text always embeds the same way and neighbours have
structure, as real sentence embeddings do. Uniformly random vectors would be a harder and less
realistic case for HNSW. Queries are chunks of documents the load never stored (`chunk_texts`),
embedded by the load's own embedder: for the stand-in, fresh draws from the same mixture.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from multiprocessing import get_context
from typing import Any

from agent.formats import DocumentFormat
from agent.services.document_input import DocumentInput, prepare
from agent.services.ingest import PendingDocument
from agent.settings import AgentSettings
from serving.types import EmbeddingResult, Usage

DIM = 384
CLUSTERS = 400
SECTIONS = 10
NOISE = 0.6
WORDS = [f"w{n:04d}" for n in range(3000)]


class MixtureSpace:
    def __init__(self, seed: int = 7) -> None:
        rnd = random.Random(seed)
        self.centers = [[rnd.gauss(0, 1) for _ in range(DIM)] for _ in range(CLUSTERS)]
        self._pool = [rnd.gauss(0, 1) for _ in range(100_003)]

    def draw(self, rnd: random.Random) -> list[float]:
        center = self.centers[rnd.randrange(CLUSTERS)]
        at = rnd.randrange(len(self._pool) - DIM)
        v = [c + NOISE * n for c, n in zip(center, self._pool[at : at + DIM], strict=True)]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def of_text(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        return self.draw(random.Random(seed))


_SPACE: MixtureSpace | None = None


def _embed_in_worker(texts: list[str]) -> list[list[float]]:
    global _SPACE
    if _SPACE is None:
        _SPACE = MixtureSpace()
    return [_SPACE.of_text(t) for t in texts]


class StandInEmbedder:
    """An embedder with the corpus' structure, in its own process as a model server would be,
    so that its work overlaps the database's instead of holding this process' event loop."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._pool, _embed_in_worker, list(texts))
        return EmbeddingResult(vectors, Usage(0, 0), 0.0, "stand-in")

    def close(self) -> None:
        self._pool.shutdown()


class TimedEmbedder:
    """Wraps an embedder (the stand-in, the in-process one, the serving client) to record the
    wall time of every call in `intervals`."""

    def __init__(self, inner: Any, intervals: list[tuple[float, float]]) -> None:
        self._inner = inner
        self.intervals = intervals

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        started = time.perf_counter()
        try:
            result: EmbeddingResult = await self._inner.embed(texts)
            return result
        finally:
            self.intervals.append((started, time.perf_counter()))


class TimedStore:
    """Forwards to a DocumentStore, recording the wall time of every database call."""

    def __init__(self, inner: Any, intervals: dict[str, list[tuple[float, float]]]) -> None:
        self._inner = inner
        self.intervals = intervals

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.intervals.setdefault(name, []).append((started, time.perf_counter()))

        return timed


def documents(count: int, seed: int = 11) -> Iterator[PendingDocument]:
    rnd = random.Random(seed)
    for i in range(count):
        sections = [
            f"## Part {j}\n\nItem SKU-{i:06d}-{j} " + " ".join(rnd.choices(WORDS, k=24)) + "."
            for j in range(SECTIONS)
        ]
        doc = DocumentInput(
            text=f"# Document {i}\n\n" + "\n\n".join(sections),
            title=f"Document {i}",
            format=DocumentFormat.MARKDOWN,
            metadata={"p1": i % 100, "p10": i % 10},
            key=f"bench-{i}",
        )
        yield PendingDocument(f"doc {i}", _given(doc))


def _given(doc: DocumentInput) -> Callable[[], DocumentInput]:
    return lambda: doc


def chunk_texts(count: int, seed: int) -> list[str]:
    """The texts ingestion would embed for `count` chunks of `documents(..., seed)`. With another
    seed than a load's, they are chunks of the same kind that the load never stored: queries
    in the embedder's own space, whichever embedder it is."""
    settings = AgentSettings()
    texts: list[str] = []
    for pending in documents(count // SECTIONS + 1, seed=seed):
        texts += prepare(pending.label, pending.load(), settings).embedding_inputs()
    return texts[:count]


def query_texts(count: int, seed: int) -> list[str]:
    """One chunk of each of `count` documents of `documents(..., seed)` (section i % SECTIONS of
    document i): queries as independent as the corpus allows. The ten chunks of one document
    share its title and SKU prefix, so `chunk_texts` queries from 20 documents measure ~20
    independent draws: sets of them differed by 0.04 in recall@10 from one seed to another."""
    settings = AgentSettings()
    texts = []
    for i, pending in enumerate(documents(count, seed=seed)):
        inputs = prepare(pending.label, pending.load(), settings).embedding_inputs()
        texts.append(inputs[i % len(inputs)])
    return texts


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def exclusive_seconds(mine: list[tuple[float, float]], others: list[tuple[float, float]]) -> float:
    """Time covered by `mine` and by none of `others`: what was not hidden behind them."""
    return union_seconds(mine + others) - union_seconds(others)


def prose_chunks(count: int, words: int = 130, seed: int = 5) -> list[str]:
    """`count` English passages of about `words` words, as ingestion makes them: sentences of
    the demo documents drawn at random, each passage numbered so that no two are the same text.
    At 130 words: ~190 MiniLM tokens, at most 254, under the 256 the vLLM engine accepts."""
    demo = resources.files("ops") / "demo"
    source = " ".join(
        p.read_text(encoding="utf-8")
        for p in sorted(demo.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".md")
    )
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", source) if len(s.split()) > 3]
    rnd = random.Random(seed)
    passages = []
    for i in range(count):
        chosen: list[str] = []
        while sum(len(s.split()) for s in chosen) < words:
            chosen.append(rnd.choice(sentences))
        passages.append(f"Passage {i}. " + " ".join(chosen))
    return passages
