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


class OnnxEmbedder:
    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        batch_size: int = DEFAULT_BATCH,
        threads: int = 0,
    ) -> None:
        """`model_dir` is a folder made by `serving.embedders.convert`; `threads` = 0 lets ONNX
        Runtime use one per core."""
        manifest = read_manifest(model_dir)
        self.name = name
        self.dim = int(str(manifest["dim"]))
        self._batch = batch_size
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self._tokenizer.enable_truncation(int(str(manifest["max_tokens"])))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
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
                [result] = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
                for row, i in enumerate(chosen):
                    out[i] = result[row].tolist()
        return out, tokens
