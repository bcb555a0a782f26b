"""The in-process CPU embedder: ONNX Runtime over a converted sentence encoder, no server.

Satisfies the `Embedder` port (`embed(texts) -> EmbeddingResult`) like the HTTP client does, so
ingestion, search and the run loop take either. Texts are tokenised with the model's own
`tokenizer.json` (truncated where the engine truncates), sorted by length so a batch pads little,
and run in small batches: on CPU a batch of a few 200-token texts keeps its activations in cache,
and larger ones run slower per text (bench/embedders.py). Inference runs in a worker thread (ONNX
Runtime releases the GIL), one batch at a time, so the event loop keeps serving requests and
database writes overlap the model's work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.embedders.convert import MODEL_FILE, TOKENIZER_FILE, read_manifest
from serving.types import EmbeddingResult, Usage

DEFAULT_BATCH = 4
EXACT_BELOW_TOKENS = 16
"""Texts shorter than this (in tokens, [CLS] and [SEP] included) go through the float32 model
when an int8 one has it beside it: int8 keeps cosine > 0.99 to the float vectors for every
sentence measured, but fragments of one to three words dipped to 0.983 (bench/embedders.py), and
short texts (queries, mostly) cost next to nothing in float32."""


class OnnxEmbedder:
    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        batch_size: int = DEFAULT_BATCH,
        threads: int = 0,
        exact_dir: Path | None = None,
    ) -> None:
        """`model_dir` is a folder made by `serving.embedders.convert`; `exact_dir`, if given,
        the float32 conversion of the same model, for texts under EXACT_BELOW_TOKENS; `threads`
        = 0 lets ONNX Runtime use one per core."""
        manifest = read_manifest(model_dir)
        self.name = name
        self.dim = int(str(manifest["dim"]))
        self._batch = batch_size
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        # Where sentence-transformers truncates, not where the file says (MiniLM's says 128),
        # and no padding from the file either (MiniLM's pads to 128): batches pad themselves,
        # and a pad token counted as text would change the vector.
        self._tokenizer.enable_truncation(int(str(manifest["max_tokens"])))
        self._tokenizer.no_padding()
        self._session = _session(model_dir, threads)
        self._exact = None if exact_dir is None else _session(exact_dir, threads)
        # One batch at a time: two concurrent runs would only split the same cores.
        self._lock = threading.Lock()

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        started = time.perf_counter()
        vectors, tokens = await asyncio.to_thread(self.embed_sync, list(texts))
        latency_ms = (time.perf_counter() - started) * 1000.0
        return EmbeddingResult(vectors, Usage(tokens, 0), latency_ms, self.name)

    def embed_sync(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors in input order and the tokens they took; blocks the calling thread."""
        if not texts:
            return [], 0
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: list[Any] = [None] * len(texts)
        tokens = 0
        with self._lock:
            for start in range(0, len(order), self._batch):
                chosen = order[start : start + self._batch]
                width = max(len(encodings[i].ids) for i in chosen)
                ids = np.zeros((len(chosen), width), np.int64)
                mask = np.zeros((len(chosen), width), np.int64)
                for row, i in enumerate(chosen):
                    n = len(encodings[i].ids)
                    ids[row, :n] = encodings[i].ids
                    mask[row, :n] = 1
                    tokens += n
                short = self._exact is not None and width < EXACT_BELOW_TOKENS
                session = self._exact if short and self._exact is not None else self._session
                [result] = session.run(None, {"input_ids": ids, "attention_mask": mask})
                for row, i in enumerate(chosen):
                    out[i] = result[row].tolist()
        return out, tokens


def _session(model_dir: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads would otherwise spin for the next batch, burning the cores that
    # Postgres and the API share with us: under load that cost 10-110% more CPU for the same
    # texts and no throughput (measured on 2 cores while other work ran).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
