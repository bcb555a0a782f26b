"""The sentence-transformers side of bench/embedders.py, run by a python that has torch.

Garrison's own venv has no torch (an in-process embedder must not drag it in), so this script
runs under the engine's python (`<data dir>/engine/venv`, which has sentence-transformers for
the bundled MiniLM) and imports nothing of Garrison's. It loads the model once, then answers one
JSON request per stdin line with one JSON line:

    {"mode": "loop" | "batch", "start": 0, "end": 500, "vectors": 0}
    -> {"seconds": 16.4, "vectors": [[...], ...]}

`loop` is the plain loop the issue names, one `encode([text])` call per text; `batch` is one
`encode(texts, batch_size=32)` call. Only encoding is timed.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    from sentence_transformers import SentenceTransformer

    model_dir, texts_file = sys.argv[1], sys.argv[2]
    with open(texts_file, encoding="utf-8") as f:
        texts: list[str] = json.load(f)
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:4])  # first-call allocations are not what we measure
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        chosen = texts[request["start"] : request["end"]]
        started = time.perf_counter()
        if request["mode"] == "loop":
            vectors = [model.encode([text], normalize_embeddings=True)[0] for text in chosen]
        else:
            vectors = list(model.encode(chosen, batch_size=32, normalize_embeddings=True))
        seconds = time.perf_counter() - started
        keep = [v.tolist() for v in vectors[: request.get("vectors", 0)]]
        print(json.dumps({"seconds": seconds, "vectors": keep}), flush=True)


if __name__ == "__main__":
    main()
