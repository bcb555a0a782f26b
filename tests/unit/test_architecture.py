"""Import boundaries from ARCHITECTURE.md: ops -> agent.api -> agent -> (serving, datastore)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for file, names in imports_of(package).items():
        for name in names:
            hit = any(name == f or name.startswith(f + ".") for f in forbidden)
            ok = any(name == a or name.startswith(a + ".") for a in allowed)
            if hit and not ok:
                bad.append(f"{file} imports {name}")
    return sorted(bad)


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed"),
    [
        ("serving", ("agent", "datastore", "ops", "fastapi", "sqlalchemy"), ()),
        (
            "datastore",
            ("agent", "serving", "ops", "fastapi"),
            ("agent.domain", "agent.errors", "agent.ports", "agent.budgets.model"),
        ),
        ("agent", ("ops",), ()),
    ],
)
def test_imports_flow_one_way(
    package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    assert offenders(package, forbidden, allowed) == []


def test_only_agent_api_imports_fastapi() -> None:
    bad = [
        f
        for pkg in ("agent", "datastore", "serving", "ops")
        for f, names in imports_of(pkg).items()
        if any(n == "fastapi" or n.startswith("fastapi.") for n in names)
        and not f.startswith("agent/api/")
    ]
    assert bad == []


def test_the_appliance_never_imports_a_vendor_sdk() -> None:
    # Peers like the OpenAI SDK are benchmark-only extras; the appliance speaks HTTP itself.
    # serving/engine/scripts/ is package data run by the engine's own python (where torch lives),
    # never imported by the appliance.
    for pkg in ("agent", "datastore", "serving", "ops"):
        bad = offenders(pkg, ("openai", "langgraph", "vllm", "torch"))
        assert [b for b in bad if not b.startswith("serving/engine/scripts/")] == []
