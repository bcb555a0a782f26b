"""Engine command lines, environments, ports and the bundled registry, without an engine."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from serving.engine.bundled import (
    EMBED_PORT,
    GEMMA,
    MINILM,
    bundled_registry,
    chat_template,
    gemma_dir,
)
from serving.engine.command import engine_command, engine_env, is_local, local_ports
from serving.engine.errors import EngineStartFailed
from serving.engine.gguf import MANIFEST, verify
from serving.engine.manager import EngineManager
from serving.engine.settings import EngineSettings
from serving.registry import Capabilities, Deployment, Placement, Registry

PY = "/opt/engine/bin/python"
SERVER = [PY, "-m", "vllm.entrypoints.openai.api_server"]


def chat(**placement: object) -> Deployment:
    return Deployment(
        name="qwen",
        model="/models/qwen",
        roles=("decide",),
        capabilities=Capabilities(chat_template=Path("/t/chat.jinja"), context_length=4096),
        placement=Placement.model_validate(placement or {"kind": "local"}),
    )


def embed() -> Deployment:
    return Deployment(
        name="bge",
        model="/models/bge",
        served_model_name="garrison-embed",
        roles=("embed",),
        capabilities=Capabilities(embedding_dim=768, context_length=512),
        engine_args=("--max-num-seqs", "16"),
    )


def external() -> Deployment:
    return Deployment(
        name="remote",
        model="big-model",
        roles=("decide",),
        placement=Placement(kind="external", url="http://gpu-box:8000/v1"),
    )


def test_a_cpu_chat_engine_listens_on_loopback_with_its_template_and_prefix_cache() -> None:
    assert engine_command(chat(), python=PY, port=8001) == [
        *SERVER,
        *("--model", "/models/qwen", "--served-model-name", "qwen"),
        *("--host", "127.0.0.1", "--port", "8001", "--max-model-len", "4096"),
        "--enable-prefix-caching",
        *("--chat-template", "/t/chat.jinja"),
    ]


def test_an_embedding_engine_is_a_pooling_runner_and_its_own_args_come_last() -> None:
    argv = engine_command(embed(), python=PY, port=8002)
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert argv[argv.index("--served-model-name") + 1] == "garrison-embed"
    assert "--enable-prefix-caching" not in argv
    assert "--chat-template" not in argv
    # Last, so that an operator's flag overrides a derived one (vLLM keeps the last).
    assert argv[-2:] == ["--max-num-seqs", "16"]


def test_one_gpu_is_chosen_by_cuda_visible_devices_without_tensor_parallelism() -> None:
    deployment = chat(kind="local", device="gpu", gpus=[1])
    argv = engine_command(deployment, python=PY, port=8001)
    env = engine_env(deployment, {"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert "--tensor-parallel-size" not in argv
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "VLLM_TARGET_DEVICE" not in env
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_several_gpus_mean_tensor_parallel_over_exactly_those_gpus() -> None:
    deployment = chat(kind="local", device="gpu", gpus=[2, 3, 4, 5])
    argv = engine_command(deployment, python=PY, port=8001)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert engine_env(deployment, {})["CUDA_VISIBLE_DEVICES"] == "2,3,4,5"


def test_a_cpu_engine_gets_a_fixed_kv_cache_and_no_gpu() -> None:
    env = engine_env(chat(), {"CUDA_VISIBLE_DEVICES": "0"}, kvcache_gb=3)
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_the_engine_environment_is_offline_quiet_and_free_of_the_apps_interpreter() -> None:
    base = {
        "PATH": "/usr/bin",
        "HF_TOKEN": "hf_secret",
        "HUGGING_FACE_HUB_TOKEN": "hf_secret",
        "HF_HUB_OFFLINE": "0",
        "PYTHONPATH": "/work/main",
        "VIRTUAL_ENV": "/work/main/.venv",
    }
    env = engine_env(embed(), base)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env[key] == "1", key
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["PATH"] == "/usr/bin"
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PYTHONPATH", "VIRTUAL_ENV"):
        assert key not in env, key
    assert base["HF_HUB_OFFLINE"] == "0"  # the caller's mapping is left alone


def test_external_deployments_get_no_port_and_are_never_started(tmp_path: Path) -> None:
    registry = Registry(deployments=(chat(), external(), embed()))
    assert not is_local(external())
    # 8001 + registry index; the external one takes an index but no port.
    assert local_ports(registry) == {"qwen": 8001, "bge": 8003}
    with pytest.raises(ValueError, match="placed externally"):
        engine_command(external(), python=PY, port=9000)
    manager = EngineManager(registry, EngineSettings(data_dir=tmp_path), python=Path(PY))
    with pytest.raises(EngineStartFailed, match="runs elsewhere"):
        manager.start(external())
    status = manager.status(external())
    assert (status.state, status.detail) == ("external", "http://gpu-box:8000/v1")
    assert manager.local == (registry.deployments[0], registry.deployments[2])
    assert not (tmp_path / "engines").exists()


def test_an_explicit_port_wins(tmp_path: Path) -> None:
    registry = Registry(deployments=(chat(kind="local", port=9100), embed()))
    assert local_ports(registry) == {"qwen": 9100, "bge": 8002}


def test_a_missing_model_folder_fails_before_anything_starts(tmp_path: Path) -> None:
    registry = Registry(deployments=(chat(),))
    manager = EngineManager(registry, EngineSettings(data_dir=tmp_path), python=Path(PY))
    with pytest.raises(EngineStartFailed, match="model folder of qwen does not exist"):
        manager.start(registry.deployments[0])


def test_the_bundled_registry_serves_every_role_on_cpu(tmp_path: Path) -> None:
    settings = EngineSettings(data_dir=tmp_path)
    registry = bundled_registry(settings, minilm=tmp_path / "minilm" / "model")
    assert [d.name for d in registry.chain("decide")] == [GEMMA]
    assert [d.name for d in registry.chain("extract")] == [GEMMA]
    assert [d.name for d in registry.chain("embed")] == [MINILM]
    gemma, minilm = registry.deployments
    assert gemma.model == str(gemma_dir(settings)) == str(tmp_path / "models" / GEMMA)
    assert gemma.capabilities.chat_template == chat_template()
    assert chat_template().is_file()
    assert gemma.capabilities.structured_output
    assert minilm.capabilities.embedding_dim == 384
    assert local_ports(registry) == {GEMMA: 8001, MINILM: EMBED_PORT}
    argv = engine_command(minilm, python=PY, port=EMBED_PORT)
    assert argv[argv.index("--max-model-len") + 1] == "256"
    assert "--runner" in argv
    argv = engine_command(gemma, python=PY, port=8001)
    assert argv[argv.index("--chat-template") + 1] == str(chat_template())
    assert argv[argv.index("--max-model-len") + 1] == "2048"


def test_engine_settings_refuse_a_python_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an existing python"):
        EngineSettings(engine_python=tmp_path / "nope")
    assert EngineSettings(engine_python="").engine_python is None
    settings = EngineSettings(data_dir=tmp_path)
    assert settings.venv_dir == tmp_path / "engine" / "venv"
    assert settings.engines_dir == tmp_path / "engines"


def test_the_chat_template_folds_the_system_prompt_into_the_first_user_turn() -> None:
    # vLLM renders templates with transformers' sandboxed Jinja environment; the same here.
    sandbox = pytest.importorskip(
        "jinja2.sandbox", reason="jinja2 is not installed in the application's environment"
    )
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(chat_template().read_text(encoding="utf-8"))
    messages = [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "What is the refund policy?"},
        {"role": "assistant", "content": '{"tool": "finish"}'},
        {"role": "user", "content": [{"type": "text", "text": "Result: none"}]},
    ]
    rendered = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True)
    assert rendered == (
        "<bos><start_of_turn>user\nAnswer in JSON.\n\nWhat is the refund policy?<end_of_turn>\n"
        '<start_of_turn>model\n{"tool": "finish"}<end_of_turn>\n'
        "<start_of_turn>user\nResult: none<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def write_import(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    manifest = {
        "source": {"sha256": "src"},
        "template_sha256": "tpl",
        "files": {"model.safetensors": {"bytes": 7, "sha256": digest}},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_an_import_is_cached_only_while_its_manifest_checks_out(tmp_path: Path) -> None:
    folder = tmp_path / "gemma"
    write_import(folder)
    assert verify(folder, source_sha="src", template_sha="tpl") is None
    assert verify(folder, source_sha="new", template_sha="tpl") == "the source GGUF changed"
    assert verify(folder, source_sha="src", template_sha="new") == "the chat template changed"
    (folder / "model.safetensors").write_bytes(b"weighty")
    assert verify(folder, source_sha="src", template_sha="tpl") == "model.safetensors was altered"
    (folder / "model.safetensors").unlink()
    assert "missing" in (verify(folder, source_sha="src", template_sha="tpl") or "")
    none = tmp_path / "none"
    assert verify(none, source_sha="src", template_sha="tpl") == "no complete import yet"
