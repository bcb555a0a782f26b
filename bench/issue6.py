"""Issue 6 in one run: ingestion, retrieval and embedding on CPU (TARGETS.md I1, I2, R1, R2).

It composes the two benchmarks that measure these, so that each figure means what it means there:

1. bench/embedders.py, reduced to the issue's baseline and the appliance's choice: the same
   passages of ~190 tokens through a plain sentence-transformers loop (`encode([text])`, run by
   the engine's python, which has torch; Garrison's venv has none) and through the in-process
   ONNX MiniLM int8, taking turns. It runs first, while no database is up to share the cores.
2. bench/retrieval.py with that embedder embedding everything (`--in-process --add-in-process`):
   the fresh bulk load of 100k chunks of 384 dimensions and the additions to the live index,
   with the database's share of their wall time; then recall@10 against an exact scan of the
   same stored vectors, and p50/p99 latency, unfiltered and at 10% and 1% selectivity, for
   queries the same model embedded (chunks of documents the load never stored).

Then one table of this run's figures against the targets.

    .venv/bin/python -m bench.issue6 [--documents 10000] [--queries 200] [--add 500]
        [--texts 600] [--rounds 3]

At the defaults it takes ~25-30 min on 2 cores (the load embeds ~80 texts/s), longer on a
busy machine; `--documents 300 --add 20 --queries 50 --texts 60` checks the wiring in a few
minutes. `bench/retrieval.py` without `--in-process` stays the fast development mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from bench import embedders, retrieval
from bench.corpus import prose_chunks
from bench.embedders import BASELINE, CHOSEN, Candidate
from bench.ingest_share import Phase

RECALL = 0.95
UNFILTERED_P50_MS = 2.0
FILTERED_P50_MS = 10.0
DB_CRITICAL_SHARE = 0.01
SPEEDUP = 3.0


def targets(found: dict[str, Any], candidates: list[Candidate]) -> list[tuple[str, str, str, bool]]:
    """(id, measure, this run's figure, met) for each target of the issue."""
    rows = {r["name"]: r for r in found["search"]}
    lines = []
    for (name, _), p50_target in zip(
        retrieval.SCENARIOS, (UNFILTERED_P50_MS, FILTERED_P50_MS, FILTERED_P50_MS), strict=True
    ):
        r = rows[name]
        plans = ", ".join(sorted(r["strategies"]))
        figure = f"{r['recall']:.3f}, {r['p50']:.2f} / {r['p99']:.2f} ms, {r['short']} short"
        met = r["recall"] >= RECALL and r["p50"] <= p50_target and r["short"] == 0
        target = "R1" if p50_target == UNFILTERED_P50_MS else "R2"
        lines.append((target, f"{name} ({plans}): recall@10, p50 / p99", figure, met))
    phases: list[tuple[str, Phase]] = [("fresh bulk load", found["load"][0])]
    if "add" in found:
        phases.append(("added to the live index", found["add"][0]))
    for title, p in phases:
        figure = (
            f"{p.db_exposed / p.wall:.2%} (busy {p.db / p.wall:.1%}), {p.chunks / p.wall:.0f}/s"
        )
        measure = f"{title}, {p.chunks:,} chunks: database on the critical path"
        lines.append(("I1", measure, figure, p.db_exposed / p.wall <= DB_CRITICAL_SHARE))
    by_name = {c.name: c for c in candidates}
    chosen, loop = by_name[CHOSEN], by_name[BASELINE]
    ratio = chosen.rate / loop.rate
    figure = f"{ratio:.2f}x ({chosen.rate:.1f} vs {loop.rate:.1f} texts/s)"
    lines.append(
        ("I2", "in-process ONNX int8 vs sentence-transformers loop", figure, ratio >= SPEEDUP)
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    retrieval.add_arguments(parser)
    parser.add_argument("--texts", type=int, default=600, help="passages the embedders compare on")
    parser.add_argument("--rounds", type=int, default=3, help="turns the embedders take")
    # Everything embedded for real; the comparison measures the embedder alone instead of the
    # probe, on the same passages, against the baseline.
    parser.set_defaults(in_process=True, add_in_process=True, probe=0)
    args = parser.parse_args()
    texts = prose_chunks(args.texts)
    print(f"embedders: {args.texts} passages, {args.rounds} rounds", flush=True)
    candidates = asyncio.run(embedders.compare(texts, args.rounds, engine=False, variants=False))
    print(f"ingestion and retrieval: {args.documents * 10:,} chunks", flush=True)
    found = retrieval.measure(args)
    retrieval.report(args, found)
    embedders.report(candidates, texts)
    print(f"\nissue 6 against its targets (TARGETS.md), load average now {os.getloadavg()[0]:.2f}")
    print(f"{'id':<4}{'measure':<72}{'this run':<42}met")
    for target, measure, figure, met in targets(found, candidates):
        print(f"{target:<4}{measure:<72}{figure:<42}{'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
