"""Writing models files in tests: external deployments pointing at scripted servers."""

from __future__ import annotations

import json
from pathlib import Path


def external(
    name: str,
    url: str,
    roles: tuple[str, ...] = ("decide",),
    *,
    max_in_flight: int | None = None,
    embedding_dim: int | None = None,
    model: str = "scripted",
) -> str:
    """One `[[deployments]]` table for an engine at `url`."""
    lines = [
        "[[deployments]]",
        f"name = {json.dumps(name)}",
        f"model = {json.dumps(model)}",
        f"roles = {json.dumps(list(roles))}",
    ]
    if max_in_flight is not None:
        lines.append(f"max_in_flight = {max_in_flight}")
    if embedding_dim is not None or "embed" in roles:
        lines += ["[deployments.capabilities]", f"embedding_dim = {embedding_dim or 384}"]
    lines += ["[deployments.placement]", 'kind = "external"', f"url = {json.dumps(url)}"]
    return "\n".join(lines) + "\n"


def write_models_file(
    path: Path, *deployments: str, routes: dict[str, list[str]] | None = None
) -> Path:
    text = "\n".join(deployments)
    if routes:
        text += "\n[routes]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in routes.items())
    path.write_text(text)
    return path
