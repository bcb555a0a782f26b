"""A BERT sentence encoder as an ONNX graph, written from a Hugging Face folder's weights.

The in-process embedder runs ONNX Runtime on a graph built here, straight from the model's
`config.json` and `model.safetensors`, with numpy and the `onnx` package: no torch, no network,
no exporter. The graph is the encoder plus what sentence-transformers adds on top for models like
all-MiniLM-L6-v2 (mean pooling over the attention mask, then L2 normalisation), so its output is
the same vector the vLLM pooling runner returns for the same text.

Node names are stable (`layer3.ffn_out`), so the quantiser can be told which products to leave in
float (`activation_products`, `float_linears`). Converting, caching and quantising a model is
`serving.embedders.convert`; this module only describes the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17
"""LayerNormalization is an ONNX operator from opset 17 on (fused by ONNX Runtime)."""
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embedding"
MASKED = -10000.0
"""Added to the attention scores of padding tokens: softmax gives them zero weight."""


class UnsupportedModel(ValueError):
    """The folder is not a BERT encoder this builder knows how to write."""


@dataclass(frozen=True, slots=True)
class BertShape:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    eps: float
    max_positions: int

    @classmethod
    def read(cls, model_dir: Path) -> BertShape:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise UnsupportedModel(
                f"{model_dir}: model_type {config.get('model_type')!r} with "
                f"{config.get('hidden_act')!r}; only BERT encoders with exact GELU are supported"
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModel(f"{model_dir}: only absolute position embeddings")
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=int(config["num_attention_heads"]),
            intermediate=int(config["intermediate_size"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            max_positions=int(config["max_position_embeddings"]),
        )


def activation_products(shape: BertShape) -> list[str]:
    """The attention products of two activations: never quantised (no weights to quantise,
    and their dynamic range is what int8 loses most on)."""
    return [f"layer{i}.{name}" for i in range(shape.layers) for name in ("scores", "context")]


def float_linears(shape: BertShape) -> list[str]:
    """The feed-forward output projections: their inputs (after GELU) carry the outliers that
    per-tensor int8 activations clip, so they stay float (bench/embedders.py measures why)."""
    return [f"layer{i}.ffn_out" for i in range(shape.layers)]


def build(model_dir: Path) -> tuple[onnx.ModelProto, BertShape]:
    """The float32 sentence encoder of `model_dir` as an ONNX model."""
    shape = BertShape.read(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    b = _Builder(weights, shape)
    return b.model(), shape


class _Builder:
    def __init__(self, weights: dict[str, np.ndarray[Any, Any]], shape: BertShape) -> None:
        self._w = {k.removeprefix("bert."): v for k, v in weights.items()}
        self._s = shape
        self._nodes: list[onnx.NodeProto] = []
        self._inits: list[onnx.TensorProto] = []

    def model(self) -> onnx.ModelProto:
        s = self._s
        x = self._embeddings()
        bias = self._mask_bias()
        for i in range(s.layers):
            x = self._layer(i, x, bias)
        pooled = self._mean_pool(x)
        self._node("LpNormalization", [pooled], OUTPUT, axis=-1, p=2)
        graph = helper.make_graph(
            self._nodes,
            "sentence_encoder",
            [
                helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
                for name in INPUTS
            ],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", s.hidden])],
            self._inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # what ONNX Runtime releases of the last years all read
        onnx.checker.check_model(model)
        return model

    # -- pieces -------------------------------------------------------------------------

    def _embeddings(self) -> str:
        words = self._init("word_embeddings", self._w["embeddings.word_embeddings.weight"])
        positions = self._init(
            "position_embeddings", self._w["embeddings.position_embeddings.weight"]
        )
        # Every token is of segment 0: a sentence encoder sees one segment.
        segment = self._init(
            "segment_embedding", self._w["embeddings.token_type_embeddings.weight"][0]
        )
        tokens = self._node("Gather", [words, "input_ids"], "tokens_embedded", axis=0)
        shape = self._node("Shape", ["input_ids"], "input_shape")
        length = self._node(
            "Gather", [shape, self._const("one_index", np.array(1, np.int64))], "length", axis=0
        )
        zero = self._const("zero", np.array(0, np.int64))
        step = self._const("step", np.array(1, np.int64))
        ids = self._node("Range", [zero, length, step], "position_ids")
        placed = self._node("Gather", [positions, ids], "positions_embedded", axis=0)
        summed = self._node("Add", [tokens, placed], "embedded_positions")
        summed = self._node("Add", [summed, segment], "embedded")
        return self._layer_norm("embeddings.LayerNorm", summed, "embeddings")

    def _mask_bias(self) -> str:
        mask = self._node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
        one = self._const("f_one", np.array(1.0, np.float32))
        inverted = self._node("Sub", [one, mask], "mask_inverted")
        scaled = self._node(
            "Mul", [inverted, self._const("masked", np.array(MASKED, np.float32))], "mask_scaled"
        )
        axes = self._const("mask_axes", np.array([1, 2], np.int64))
        return self._node("Unsqueeze", [scaled, axes], "mask_bias")  # [batch, 1, 1, tokens]

    def _layer(self, i: int, x: str, bias: str) -> str:
        s = self._s
        p = f"encoder.layer.{i}."
        head = s.hidden // s.heads
        split = self._const(f"layer{i}.split", np.array([0, 0, s.heads, head], np.int64))
        merge = self._const(f"layer{i}.merge", np.array([0, 0, s.hidden], np.int64))

        def heads(name: str, perm: list[int]) -> str:
            projected = self._linear(f"layer{i}.{name}", p + f"attention.self.{name}", x)
            shaped = self._node("Reshape", [projected, split], f"layer{i}.{name}_heads")
            return self._node("Transpose", [shaped], f"layer{i}.{name}_t", perm=perm)

        q = heads("query", [0, 2, 1, 3])
        k = heads("key", [0, 2, 3, 1])
        v = heads("value", [0, 2, 1, 3])
        scores = self._node("MatMul", [q, k], f"layer{i}.scores")
        scale = self._const(f"layer{i}.scale", np.array(1.0 / math.sqrt(head), np.float32))
        scores = self._node("Mul", [scores, scale], f"layer{i}.scaled")
        scores = self._node("Add", [scores, bias], f"layer{i}.masked")
        probs = self._node("Softmax", [scores], f"layer{i}.probs", axis=-1)
        context = self._node("MatMul", [probs, v], f"layer{i}.context")
        context = self._node("Transpose", [context], f"layer{i}.context_t", perm=[0, 2, 1, 3])
        context = self._node("Reshape", [context, merge], f"layer{i}.context_merged")
        attended = self._linear(f"layer{i}.attn_out", p + "attention.output.dense", context)
        x = self._node("Add", [x, attended], f"layer{i}.attn_residual")
        x = self._layer_norm(p + "attention.output.LayerNorm", x, f"layer{i}.attn_norm")
        hidden = self._linear(f"layer{i}.ffn_in", p + "intermediate.dense", x)
        hidden = self._gelu(f"layer{i}.gelu", hidden)
        out = self._linear(f"layer{i}.ffn_out", p + "output.dense", hidden)
        x = self._node("Add", [x, out], f"layer{i}.ffn_residual")
        return self._layer_norm(p + "output.LayerNorm", x, f"layer{i}.out")

    def _mean_pool(self, x: str) -> str:
        mask = self._node("Cast", ["attention_mask"], "pool_mask", to=TensorProto.FLOAT)
        mask3 = self._node(
            "Unsqueeze", [mask, self._const("pool_axis", np.array([2], np.int64))], "pool_mask3"
        )
        kept = self._node("Mul", [x, mask3], "pool_kept")
        axis = self._const("token_axis", np.array([1], np.int64))
        total = self._node("ReduceSum", [kept, axis], "pool_sum", keepdims=0)
        count = self._node("ReduceSum", [mask3, axis], "pool_count", keepdims=0)
        count = self._node(
            "Max", [count, self._const("min_count", np.array(1e-9, np.float32))], "pool_count_safe"
        )
        return self._node("Div", [total, count], "pooled")

    def _linear(self, name: str, prefix: str, x: str) -> str:
        # Hugging Face stores a Linear's weight as [out, in]; MatMul wants [in, out].
        weight = self._init(f"{name}.weight", np.ascontiguousarray(self._w[prefix + ".weight"].T))
        bias = self._init(f"{name}.bias", self._w[prefix + ".bias"])
        product = self._node("MatMul", [x, weight], name)
        return self._node("Add", [product, bias], f"{name}.biased")

    def _gelu(self, name: str, x: str) -> str:
        # Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), the pattern ONNX Runtime fuses into Gelu.
        scaled = self._node(
            "Div",
            [x, self._const(f"{name}.sqrt2", np.array(math.sqrt(2.0), np.float32))],
            f"{name}.div",
        )
        erf = self._node("Erf", [scaled], f"{name}.erf")
        shifted = self._node(
            "Add", [erf, self._const(f"{name}.one", np.array(1.0, np.float32))], f"{name}.add"
        )
        gated = self._node("Mul", [x, shifted], f"{name}.mul")
        return self._node(
            "Mul", [gated, self._const(f"{name}.half", np.array(0.5, np.float32))], name
        )

    def _layer_norm(self, prefix: str, x: str, name: str) -> str:
        scale = self._init(f"{name}.gamma", self._w[prefix + ".weight"])
        bias = self._init(f"{name}.beta", self._w[prefix + ".bias"])
        return self._node(
            "LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=self._s.eps
        )

    # -- plumbing -----------------------------------------------------------------------

    def _node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self._nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _init(self, name: str, value: np.ndarray[Any, Any]) -> str:
        self._inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def _const(self, name: str, value: np.ndarray[Any, Any]) -> str:
        self._inits.append(numpy_helper.from_array(value, name))
        return name
