"""Which registry is active, and what to tell an operator when a role has no model.

In order of precedence:

1. the models file (`GARRISON_MODELS_FILE`), which is then the whole registry;
2. `GARRISON_CHAT_URL` / `GARRISON_EMBED_URL`: external deployments `chat` (decide, extract) and
   `embed`, the appliance's behaviour before there was a registry;
3. the bundled CPU registry (`serving.engine.bundled`), when that package is installed;
4. nothing: every role is unavailable, with a message that says how to configure one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from serving.models_file import load_models_file
from serving.registry import Capabilities, Deployment, Placement, Registry
from serving.settings import ServingSettings

Origin = Literal["models_file", "environment", "bundled", "none"]
ENV_EMBEDDING_DIM = 384
"""What the `embed` deployment built from GARRISON_EMBED_URL is assumed to produce."""
_ROLE_VARIABLE = {"embed": "GARRISON_EMBED_URL"}
_BUNDLED = "serving.engine.bundled"


@dataclass(frozen=True, slots=True)
class RegistrySource:
    """The active registry and where it came from."""

    registry: Registry
    origin: Origin
    description: str
    """For people: `models file /etc/garrison/models.toml`, `GARRISON_CHAT_URL/...`, ..."""

    def how_to_configure(self, role: str) -> str:
        """What to change so that something serves `role`."""
        variable = _ROLE_VARIABLE.get(role, "GARRISON_CHAT_URL")
        if self.origin == "models_file":
            return f"add a deployment serving {role!r} to the {self.description}"
        return (
            f"set {variable} to an OpenAI-compatible endpoint (e.g. vLLM at "
            f"http://127.0.0.1:8001/v1), or GARRISON_MODELS_FILE to a models file with a "
            f"deployment serving {role!r}"
        )

    def when_down(self, role: str) -> str:
        """What to check when every deployment of `role` failed to answer."""
        variable = _ROLE_VARIABLE.get(role, "GARRISON_CHAT_URL")
        if self.origin == "bundled":
            return (
                f"start the bundled engines with `garrison models serve`, or set {variable} "
                "or GARRISON_MODELS_FILE to engines that are already running"
            )
        if self.origin == "environment":
            return f"is the engine at {variable} running? (`garrison models health`)"
        if self.origin == "models_file":
            return f"check the engines of the {self.description} (`garrison models health`)"
        return self.how_to_configure(role)


def active_registry(
    settings: ServingSettings, *, embedding_dim: int | None = None
) -> RegistrySource:
    """Resolve the registry for `settings`; `ModelsFileError` if the models file is invalid."""
    if settings.models_file is not None:
        registry = load_models_file(settings.models_file, embedding_dim=embedding_dim)
        return RegistrySource(registry, "models_file", f"models file {settings.models_file}")
    if settings.chat_url or settings.embed_url:
        return RegistrySource(
            environment_registry(settings), "environment", "GARRISON_CHAT_URL/GARRISON_EMBED_URL"
        )
    bundled = None if settings.engines == "off" else _bundled_registry(settings)
    if bundled is not None:
        return RegistrySource(bundled, "bundled", "bundled CPU models")
    return RegistrySource(Registry(deployments=()), "none", "no models configured")


def environment_registry(settings: ServingSettings) -> Registry:
    deployments = []
    if settings.chat_url:
        deployments.append(
            Deployment(
                name="chat",
                model=settings.chat_model,
                roles=("decide", "extract"),
                placement=Placement(kind="external", url=settings.chat_url),
            )
        )
    if settings.embed_url:
        deployments.append(
            Deployment(
                name="embed",
                model=settings.embed_model,
                roles=("embed",),
                capabilities=Capabilities(embedding_dim=ENV_EMBEDDING_DIM),
                placement=Placement(kind="external", url=settings.embed_url),
            )
        )
    return Registry(deployments=tuple(deployments))


def _bundled_registry(settings: ServingSettings) -> Registry | None:
    # Imported on use and optional: the engine package is developed alongside the router and
    # its absence must leave the appliance working (every role then says how to configure it).
    try:
        bundled = importlib.import_module(_BUNDLED)
    except ModuleNotFoundError as exc:
        if exc.name in ("serving.engine", _BUNDLED):
            return None
        raise
    registry = bundled.active_registry(settings)
    if registry is None:
        return None
    if not isinstance(registry, Registry):
        raise TypeError(f"{_BUNDLED}.active_registry returned {type(registry).__name__}")
    return registry
