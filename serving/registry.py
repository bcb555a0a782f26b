"""The model registry: which deployments exist, what each can do, where it runs, which roles
it serves. Pure types and the built-in CPU defaults; loading a models file lives in
`serving.models_file`, persisting it in the datastore.

A deployment is one OpenAI-compatible engine serving one model. Garrison starts and watches
engines it places itself (`placement.kind == "local"`); engines someone else runs
(`placement.kind == "external"`) are only health-checked and called.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KNOWN_ROLES = frozenset({"decide", "extract", "embed"})
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
LOCAL_PORT_BASE = 8001
"""A local engine without an explicit port listens on LOCAL_PORT_BASE + its registry index."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Capabilities(Strict):
    """What the served model can do; the loop and router adapt to it, never guess."""

    chat_template: Path | None = None
    """A Jinja chat template file passed to the engine (`--chat-template`); base models need one."""
    context_length: int = Field(default=2048, ge=128, le=2_000_000)
    structured_output: bool = True
    """Guided decoding with a JSON schema (`response_format: json_schema`)."""
    tool_call_format: Literal["json_schema", "none"] = "json_schema"
    embedding_dim: int | None = Field(default=None, ge=1, le=65536)
    """For `embed` deployments: the vector size the model produces."""


class Placement(Strict):
    kind: Literal["local", "external"] = "local"
    device: Literal["cpu", "gpu"] = "cpu"
    gpus: tuple[int, ...] = ()
    """GPU ids for a local GPU engine (CUDA_VISIBLE_DEVICES); more than one = tensor parallel."""
    url: str | None = None
    """Base URL including /v1, for an external engine."""
    port: int | None = Field(default=None, ge=1024, le=65535)
    """Loopback port for a local engine; assigned from 8001 upwards when omitted."""

    @model_validator(mode="after")
    def _consistent(self) -> Placement:
        if self.kind == "external":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("an external placement needs url = 'http(s)://host:port/v1'")
            if self.gpus:
                raise ValueError("an external placement cannot name gpus")
        else:
            if self.url is not None:
                raise ValueError("a local placement has no url (Garrison starts the engine)")
            if self.device == "cpu" and self.gpus:
                raise ValueError("a cpu placement cannot name gpus")
            if self.device == "gpu" and not self.gpus:
                raise ValueError("a gpu placement needs gpus = [ids]")
            if len(set(self.gpus)) != len(self.gpus):
                raise ValueError("gpus must not repeat")
        return self


class Deployment(Strict):
    name: str
    model: str
    """A local model folder (Hugging Face layout); nothing is fetched from a hub. For an
    external engine, the model name it serves."""
    served_model_name: str | None = None
    roles: tuple[str, ...]
    engine_args: tuple[str, ...] = ()
    """Extra vLLM arguments, verbatim (e.g. "--max-model-len", "4096")."""
    capabilities: Capabilities = Capabilities()
    placement: Placement = Placement()
    max_in_flight: int = Field(default=8, ge=1, le=10_000)
    """Garrison's own cap on concurrent requests to this engine (vLLM's queue is unbounded)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("name must be 1-63 lowercase letters, digits, '.', '-' or '_'")
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a deployment serves at least one role")
        unknown = sorted(set(value) - KNOWN_ROLES)
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {sorted(KNOWN_ROLES)}")
        return value

    @model_validator(mode="after")
    def _embed_is_alone(self) -> Deployment:
        if "embed" in self.roles and len(self.roles) > 1:
            raise ValueError("an embedding deployment serves only the 'embed' role")
        if "embed" in self.roles and self.capabilities.embedding_dim is None:
            raise ValueError("an embedding deployment needs capabilities.embedding_dim")
        return self

    @property
    def served_name(self) -> str:
        """The model name requests carry: `served_model_name`, else for an external engine the
        `model` it serves, else the deployment's name (what a local engine is started with)."""
        if self.served_model_name:
            return self.served_model_name
        return self.model if self.placement.kind == "external" else self.name

    @property
    def is_embedding(self) -> bool:
        return "embed" in self.roles


class Registry(Strict):
    deployments: tuple[Deployment, ...]
    routes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Per role, deployment names in fallback order. A role without a route uses every
    deployment that serves it, in file order."""

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        names = [d.name for d in self.deployments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"deployment names must be unique: {dupes}")
        # Effective ports, so an assigned 8001+index cannot collide with another's explicit one.
        used: dict[int, str] = {}
        for index, deployment in enumerate(self.deployments):
            port = local_port(deployment, index)
            if port is None:
                continue
            if port in used:
                raise ValueError(
                    f"deployments {used[port]!r} and {deployment.name!r} would both listen on "
                    f"port {port}; give one of them placement.port"
                )
            used[port] = deployment.name
        by_name = {d.name: d for d in self.deployments}
        for role, chain in self.routes.items():
            if role not in KNOWN_ROLES:
                raise ValueError(f"routes: unknown role {role!r}")
            for name in chain:
                if name not in by_name:
                    raise ValueError(f"routes.{role}: no deployment named {name!r}")
                if role not in by_name[name].roles:
                    raise ValueError(f"routes.{role}: deployment {name!r} does not serve {role}")
        return self

    def chain(self, role: str) -> tuple[Deployment, ...]:
        """Deployments for `role`, best first; empty when nothing serves it."""
        by_name = {d.name: d for d in self.deployments}
        if role in self.routes:
            return tuple(by_name[n] for n in self.routes[role])
        return tuple(d for d in self.deployments if role in d.roles)

    def get(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)

    def port_of(self, name: str) -> int | None:
        """The loopback port of local deployment `name`; None for an external one."""
        for index, deployment in enumerate(self.deployments):
            if deployment.name == name:
                return local_port(deployment, index)
        raise KeyError(name)

    def url_of(self, name: str) -> str:
        """Where deployment `name` answers: its own URL, or the local engine's loopback URL."""
        for index, deployment in enumerate(self.deployments):
            if deployment.name == name:
                return deployment_url(deployment, index)
        raise KeyError(name)


def local_port(deployment: Deployment, index: int) -> int | None:
    """The port a local engine listens on: placement.port, else LOCAL_PORT_BASE + `index` (its
    position in the registry). None for an external deployment. The engine supervisor and the
    router both call this, so they always agree."""
    if deployment.placement.kind == "external":
        return None
    if deployment.placement.port is not None:
        return deployment.placement.port
    return LOCAL_PORT_BASE + index


def deployment_url(deployment: Deployment, index: int) -> str:
    """The OpenAI base URL (with /v1) of the deployment at registry position `index`."""
    port = local_port(deployment, index)
    if port is None:
        # The Placement validator guarantees an external placement has a URL.
        return (deployment.placement.url or "").rstrip("/")
    return f"http://127.0.0.1:{port}/v1"
