"""A tiny BERT sentence encoder made on the spot, and the BERT arithmetic written out in numpy.

The in-process embedder's converter reads a Hugging Face folder (config.json, model.safetensors,
tokenizer.json); tests that must not depend on the engine's venv (where the real MiniLM lives)
get a folder of the same layout with random weights, small enough to convert in a second, and
`reference_embedding`, the sentence-transformers computation (BERT, mean pooling over the
attention mask, L2 normalisation) spelled out, to check the ONNX graph against. The real model
is compared with the vLLM engine in tests/engine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

WORDS = [
    "annual",
    "leave",
    "days",
    "expenses",
    "claims",
    "approved",
    "manager",
    "receipt",
    "hotel",
    "taxi",
    "on",
    "call",
    "engineer",
    "incident",
    "security",
    "password",
    "email",
    "product",
    "price",
    "code",
    "refund",
    "travel",
    "meal",
    "limit",
    "policy",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN, HEADS, LAYERS, INTERMEDIATE, POSITIONS = 32, 4, 2, 64, 64
EPS = 1e-12

Weights = dict[str, np.ndarray[Any, Any]]


def make_model(folder: Path, seed: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate([*SPECIAL, *WORDS, "##s"])}
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "layer_norm_eps": EPS,
        "vocab_size": len(vocab),
        "type_vocab_size": 2,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 16}), encoding="utf-8"
    )
    save_file(_weights(len(vocab), seed), str(folder / "model.safetensors"))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    # As all-MiniLM-L6-v2's tokenizer.json does: pad every text to a fixed length (and truncate
    # shorter than the model's own limit); the embedder must ignore both settings.
    tokenizer.enable_padding(length=12, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(8)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def _weights(vocab: int, seed: int) -> Weights:
    rnd = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray[Any, Any]:
        return (rnd.standard_normal(shape) * 0.2).astype(np.float32)

    weights: Weights = {
        "embeddings.word_embeddings.weight": w(vocab, HIDDEN),
        "embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + w(HIDDEN),
        "embeddings.LayerNorm.bias": w(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name, (out, inp) in {
            "attention.self.query": (HIDDEN, HIDDEN),
            "attention.self.key": (HIDDEN, HIDDEN),
            "attention.self.value": (HIDDEN, HIDDEN),
            "attention.output.dense": (HIDDEN, HIDDEN),
            "intermediate.dense": (INTERMEDIATE, HIDDEN),
            "output.dense": (HIDDEN, INTERMEDIATE),
        }.items():
            weights[p + name + ".weight"] = w(out, inp)
            weights[p + name + ".bias"] = w(out)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            weights[p + norm + ".weight"] = 1 + w(HIDDEN)
            weights[p + norm + ".bias"] = w(HIDDEN)
    return weights


def reference_embedding(folder: Path, text: str) -> np.ndarray[Any, Any]:
    """BERT's forward pass for one text, mean-pooled and normalised, in float64 numpy."""
    from safetensors.numpy import load_file

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(16)
    ids = tokenizer.encode(text).ids
    wt = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    x = (
        wt["embeddings.word_embeddings.weight"][ids]
        + wt["embeddings.position_embeddings.weight"][: len(ids)]
        + wt["embeddings.token_type_embeddings.weight"][0]
    )
    x = _norm(x, wt, "embeddings.LayerNorm")
    head = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def linear(name: str, v: np.ndarray[Any, Any], p: str = p) -> np.ndarray[Any, Any]:
            out: np.ndarray[Any, Any] = v @ wt[p + name + ".weight"].T + wt[p + name + ".bias"]
            return out

        q, k, v = (
            linear(f"attention.self.{n}", x).reshape(len(ids), HEADS, head).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(len(ids), HIDDEN)
        x = _norm(
            x + linear("attention.output.dense", context), wt, p + "attention.output.LayerNorm"
        )
        hidden = linear("intermediate.dense", x)
        erf = np.vectorize(math.erf)
        hidden = hidden * 0.5 * (1 + erf(hidden / math.sqrt(2)))
        x = _norm(x + linear("output.dense", hidden), wt, p + "output.LayerNorm")
    pooled = x.mean(0)
    result: np.ndarray[Any, Any] = pooled / np.linalg.norm(pooled)
    return result


def _norm(x: np.ndarray[Any, Any], wt: Weights, prefix: str) -> np.ndarray[Any, Any]:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: np.ndarray[Any, Any] = (x - mean) / np.sqrt(var + EPS) * wt[prefix + ".weight"] + wt[
        prefix + ".bias"
    ]
    return out
