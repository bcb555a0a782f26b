"""The models file: TOML in, a validated `Registry` out, or an error that points at the line.

Shape (see `serving/examples/models.gpu.toml`)::

    [[deployments]]            # one per engine: name, model, roles, engine_args, max_in_flight
    [deployments.capabilities] # context_length, structured_output, embedding_dim, ...
    [deployments.placement]    # kind local|external, device cpu|gpu, gpus, url, port
    [routes]                   # optional: role = [deployment names in fallback order]

Values are validated by the `serving.registry` types; this module only adds what a person
editing the file needs: every problem, each as `file:line: deployments[i] (name "x").key: what`.
A relative `capabilities.chat_template` is taken relative to the file. Nothing is started or
contacted here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from serving.errors import ModelsFileError
from serving.registry import KNOWN_ROLES, Deployment, Registry, local_port
from serving.toml_lines import Block, LineIndex, deployment_block

_TOP_LEVEL = ("deployments", "routes")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_models_file(path: Path, *, embedding_dim: int | None = None) -> Registry:
    """Read and validate `path`. `embedding_dim`, when given, is the vector size the document
    store keeps: an embedding deployment producing another size is refused here, not at the
    first insert."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ModelsFileError(f"{path}: cannot read the models file: {reason}") from None
    return parse_models_file(
        source, name=str(path), base_dir=path.parent, embedding_dim=embedding_dim
    )


def parse_models_file(
    source: str, *, name: str, base_dir: Path | None = None, embedding_dim: int | None = None
) -> Registry:
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        message, line, column = _toml_position(str(exc), source)
        raise ModelsFileError(
            f"{name}:{line}: invalid TOML: {message} (column {column})", line
        ) from None
    return _Checker(source, name, base_dir, embedding_dim).registry(data)


def _toml_position(message: str, source: str) -> tuple[str, int, int]:
    found = _TOML_POSITION.search(message)
    if found:
        return message[: found.start()], int(found.group(1)), int(found.group(2))
    # "(at end of document)": the problem is on the last line.
    return message.split(" (at ")[0], max(1, len(source.splitlines())), 1


class _Checker:
    """Collects every problem with its line, then raises them together."""

    def __init__(
        self, source: str, name: str, base_dir: Path | None, embedding_dim: int | None
    ) -> None:
        self.lines = LineIndex(source)
        self.name = name
        self.base_dir = base_dir
        self.embedding_dim = embedding_dim
        self.problems: list[tuple[int, str]] = []

    def problem(self, block: Block, path: tuple[str, ...], where: str, what: str) -> None:
        self.problems.append((self.lines.find(block, path), f"{where}: {what}"))

    def registry(self, data: dict[str, Any]) -> Registry:
        for key in data:
            if key not in _TOP_LEVEL:
                self.problem(("root",), (key,), key, "unknown key (expected deployments, routes)")
        tables = data.get("deployments")
        deployments: list[Deployment] = []
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            self.problem(
                ("root",), ("deployments",), "deployments",
                "declare each deployment as a [[deployments]] table (two brackets)",
            )  # fmt: skip
            tables = []
        elif not tables:
            self.problem(("root",), (), "deployments", "the file declares no [[deployments]]")
        names: dict[str, int] = {}
        for index, table in enumerate(tables):
            deployment = self._deployment(index, table, names)
            if deployment is not None:
                deployments.append(deployment)
        routes = self._routes(data.get("routes", {}), tables)
        if not self.problems:
            self._ports(deployments)
        if self.problems:
            self.fail()
        try:
            return Registry(deployments=tuple(deployments), routes=routes)
        except ValidationError as exc:  # a registry-wide rule the checks above do not cover
            for error in exc.errors():
                self.problems.append((1, str(error["msg"]).removeprefix("Value error, ")))
            self.fail()

    def fail(self) -> NoReturn:
        self.problems.sort(key=lambda p: p[0])
        first = self.problems[0][0]
        text = "\n".join(f"{self.name}:{line}: {what}" for line, what in self.problems)
        raise ModelsFileError(text, first)

    def _deployment(
        self, index: int, table: dict[str, Any], names: dict[str, int]
    ) -> Deployment | None:
        block = deployment_block(index)
        name = table.get("name")
        label = f"deployments[{index}]" + (f' (name "{name}")' if isinstance(name, str) else "")
        if isinstance(name, str):
            if name in names:
                self.problem(
                    block, ("name",), f"{label}.name",
                    f"deployments[{names[name]}] (line "
                    f"{self.lines.find(deployment_block(names[name]))}) already has this name",
                )  # fmt: skip
            names.setdefault(name, index)
        self._relative_template(table)
        try:
            deployment = Deployment.model_validate(table)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(str(p) for p in error["loc"] if isinstance(p, str))
                # The deployment-wide rules are all about the embed role: point at `roles`.
                where = ".".join(loc) or "roles"
                message = str(error["msg"]).removeprefix("Value error, ")
                if error["type"] == "extra_forbidden":
                    message = "unknown key"
                self.problem(block, loc or ("roles",), f"{label}.{where}", message)
            return None
        dim = deployment.capabilities.embedding_dim
        if deployment.is_embedding and self.embedding_dim and dim != self.embedding_dim:
            self.problem(
                block, ("capabilities", "embedding_dim"), f"{label}.capabilities.embedding_dim",
                f"{dim}, but the document store keeps {self.embedding_dim}-dimensional vectors",
            )  # fmt: skip
        return deployment

    def _relative_template(self, table: dict[str, Any]) -> None:
        capabilities = table.get("capabilities")
        if self.base_dir is None or not isinstance(capabilities, dict):
            return
        template = capabilities.get("chat_template")
        if isinstance(template, str) and not Path(template).is_absolute():
            capabilities["chat_template"] = str(self.base_dir / template)

    def _routes(self, routes: Any, tables: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
        if not isinstance(routes, dict):
            self.problem(("root",), ("routes",), "routes", "must be a table: role = [names]")
            return {}
        served = {
            t["name"]: set(t.get("roles") or ()) for t in tables if isinstance(t.get("name"), str)
        }
        valid: dict[str, tuple[str, ...]] = {}
        for role, chain in routes.items():
            line = self.lines.find(("routes",), (role,))
            if line == 1:
                line = self.lines.find(("root",), ("routes", role))
            where = f"routes.{role}"
            if role not in KNOWN_ROLES:
                self.problems.append((line, f"{where}: unknown role; known: {sorted(KNOWN_ROLES)}"))
            elif not isinstance(chain, list) or not all(isinstance(n, str) for n in chain):
                self.problems.append((line, f"{where}: must be a list of deployment names"))
            elif not chain:
                self.problems.append((line, f"{where}: names no deployment"))
            else:
                for target in chain:
                    if target not in served:
                        self.problems.append((line, f"{where}: no deployment named {target!r}"))
                    elif role not in served[target]:
                        self.problems.append(
                            (line, f"{where}: deployment {target!r} does not serve {role!r}")
                        )
                valid[role] = tuple(chain)
        return valid

    def _ports(self, deployments: list[Deployment]) -> None:
        used: dict[int, str] = {}
        for index, deployment in enumerate(deployments):
            port = local_port(deployment, index)
            if port is None:
                continue
            if port in used:
                self.problem(
                    deployment_block(index), ("placement", "port"),
                    f'deployments[{index}] (name "{deployment.name}").placement.port',
                    f"port {port} is already used by {used[port]!r}; set another placement.port",
                )  # fmt: skip
            used[port] = deployment.name
