"""Who answers `embed`: decides the router and whether `garrison up` starts the embed engine."""

from __future__ import annotations

from typing import Any

import pytest

from serving.embedders.routing import embeds_in_process
from serving.embedders.settings import EmbedderSettings
from serving.registry import Registry
from serving.registry_source import RegistrySource


def source(origin: Any) -> RegistrySource:
    return RegistrySource(registry=Registry(deployments=()), origin=origin, description=str(origin))


@pytest.mark.parametrize(
    ("embedder", "origin", "in_process"),
    [
        ("auto", "bundled", True),
        ("auto", "models_file", False),
        ("auto", "environment", False),
        ("engine", "bundled", False),
        ("onnx", "models_file", True),
        ("onnx", "bundled", True),
    ],
)
def test_embeds_in_process(embedder: Any, origin: str, in_process: bool) -> None:
    assert embeds_in_process(EmbedderSettings(embedder=embedder), source(origin)) is in_process
