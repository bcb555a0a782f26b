"""`garrison engine ...` and the engine half of `garrison models ...` before anything is
installed: what they report, and the errors they fail with. No database, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ops.cli import app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # Empty values mean "not configured", whatever the developer's shell exports.
    return {
        "GARRISON_DATA_DIR": str(tmp_path / "data"),
        "GARRISON_ENGINE_PYTHON": "",
        "GARRISON_MODELS_FILE": "",
        "GARRISON_CHAT_URL": "",
        "GARRISON_EMBED_URL": "",
    }


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_engine_status_says_where_the_engine_would_be_and_how_to_install_it(
    env: dict[str, str],
) -> None:
    result = run(env, "engine", "status", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["python"] == f"{env['GARRISON_DATA_DIR']}/engine/venv/bin/python"
    assert (payload["managed"], payload["installed"]) == (True, False)
    assert payload["hint"] == "run `garrison engine install`"
    human = run(env, "engine", "status")
    assert "installed:" in human.stdout
    assert "garrison engine install" in human.stdout


def test_models_status_lists_the_bundled_engines_as_stopped(env: dict[str, str]) -> None:
    result = run(env, "models", "status", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["installed"] is False
    rows = {row["name"]: row for row in payload["engines"]}
    assert set(rows) == {"gemma3-270m", "minilm"}
    assert rows["gemma3-270m"]["url"] == "http://127.0.0.1:8001/v1"
    assert rows["minilm"]["roles"] == ["embed"]
    assert {row["state"] for row in rows.values()} == {"stopped"}
    human = run(env, "models", "status")
    assert human.stdout.splitlines()[0].split() == [
        "NAME",
        "ROLES",
        "STATE",
        "URL",
        "PID",
        "HEALTH",
    ]


@pytest.mark.parametrize(
    ("args", "exit_code", "code"),
    [
        (("models", "serve"), 3, "engine_not_installed"),
        (("models", "import-gguf"), 3, "engine_not_installed"),
        (("models", "serve", "nosuch"), 1, "not_found"),
        (("models", "logs", "nosuch"), 1, "not_found"),
    ],
)
def test_engine_commands_fail_with_a_code_and_the_fix(
    env: dict[str, str], args: tuple[str, ...], exit_code: int, code: str
) -> None:
    result = run(env, *args)
    assert result.exit_code == exit_code, result.output
    assert f"error[{code}]: " in result.stderr
    assert result.stdout == ""
    as_json = run(env, *args, "--json")
    assert as_json.exit_code == exit_code
    assert json.loads(as_json.stderr)["error"]["code"] == code


def test_a_configured_engine_python_must_exist(env: dict[str, str], tmp_path: Path) -> None:
    env["GARRISON_ENGINE_PYTHON"] = str(tmp_path / "missing-python")
    result = run(env, "engine", "status")
    assert result.exit_code == 2, result.output
    assert "error[invalid_configuration]: " in result.stderr
    assert "GARRISON_ENGINE_PYTHON" in result.stderr


def test_stop_and_logs_of_an_engine_that_never_ran(env: dict[str, str]) -> None:
    stopped = run(env, "models", "stop", "--json")
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout) == {
        "stopped": {"gemma3-270m": "not_running", "minilm": "not_running"}
    }
    logs = run(env, "models", "logs", "minilm", "--json")
    assert logs.exit_code == 0, logs.output
    assert json.loads(logs.stdout)["lines"] == []
