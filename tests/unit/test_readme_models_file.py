"""The models file shown in README's "Deploy on a GPU box" section is valid as written."""

from __future__ import annotations

import re
from pathlib import Path

from serving.engine.command import engine_command
from serving.models_file import load_models_file

ROOT = Path(__file__).resolve().parents[2]


def test_readme_gpu_models_file_loads_and_places_engines_on_their_gpus(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on a GPU box") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "models.toml"
    path.write_text(block.group(1))
    registry = load_models_file(path)
    decide = registry.chain("decide")
    assert [d.name for d in decide] == ["qwen3-8b"]
    assert decide[0].placement.gpus == (0,)
    embed = registry.chain("embed")[0]
    assert embed.placement.gpus == (1,)
    argv = engine_command(decide[0], python="/usr/bin/python3", port=8001)
    assert "--gpu-memory-utilization" in argv
    assert argv[argv.index("--served-model-name") + 1] == "qwen3-8b"
