"""Dockerfile.gpu cannot be built here (no container engine); check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "Dockerfile.gpu").read_text()
LINES = [
    line.strip() for line in TEXT.splitlines() if line.strip() and not line.lstrip().startswith("#")
]


def test_base_is_the_official_vllm_image_pinned_to_a_release() -> None:
    arg = next(line for line in LINES if line.startswith("ARG VLLM_IMAGE="))
    image = arg.split("=", 1)[1]
    assert image.startswith("vllm/vllm-openai:")
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", image), "pin a release, not latest"
    assert "FROM ${VLLM_IMAGE}" in LINES


def test_garrison_gets_its_own_virtualenv_and_never_the_system_python() -> None:
    assert any("uv venv" in line and "${GARRISON_HOME}/venv" in line for line in LINES)
    installs = [line for line in LINES if "pip install" in line]
    assert installs, "garrison must be installed"
    assert all('--python "${GARRISON_HOME}/venv/bin/python"' in line for line in installs)
    assert 'ENTRYPOINT ["/opt/garrison/venv/bin/garrison"]' in LINES


def test_engines_use_the_images_vllm_and_nothing_calls_out() -> None:
    env = TEXT[TEXT.index("ENV GARRISON_HOME") :]
    for setting in (
        "GARRISON_ENGINE_PYTHON=/usr/bin/python3",
        "HF_HUB_OFFLINE=1",
        "TRANSFORMERS_OFFLINE=1",
        "VLLM_NO_USAGE_STATS=1",
    ):
        assert setting in env


def test_every_package_of_the_fixed_layout_is_copied() -> None:
    for package in ("serving", "agent", "datastore", "ops"):
        assert f"COPY {package} /src/garrison/{package}" in LINES
        assert (ROOT / package / "__init__.py").exists()
