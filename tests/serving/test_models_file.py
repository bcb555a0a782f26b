"""The models file: the shipped example loads, and every kind of mistake names its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving.errors import ModelsFileError
from serving.models_file import load_models_file, parse_models_file

EXAMPLE = Path(__file__).resolve().parents[2] / "serving" / "examples" / "models.gpu.toml"

VALID = """\
[[deployments]]
name = "gemma"
model = "/models/gemma-3-1b"
roles = ["decide", "extract"]

[deployments.placement]
device = "gpu"
gpus = [0]

[[deployments]]
name = "minilm"
model = "/models/all-MiniLM-L6-v2"
roles = ["embed"]
capabilities = { embedding_dim = 384 }
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def error_for(text: str, **kwargs: int) -> ModelsFileError:
    with pytest.raises(ModelsFileError) as caught:
        parse_models_file(text, name="models.toml", **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_models_file"
    return caught.value


def test_the_gpu_example_is_valid() -> None:
    registry = load_models_file(EXAMPLE, embedding_dim=384)
    [decide] = registry.chain("decide")
    assert decide.placement.gpus == (0,)
    assert "--gpu-memory-utilization" in decide.engine_args
    assert "--max-model-len" in decide.engine_args
    [embed] = registry.chain("embed")
    assert embed.placement.gpus == (1,)
    assert embed.capabilities.embedding_dim == 384
    # Local engines get loopback ports from 8001 up, by position in the file.
    assert registry.url_of(decide.name) == "http://127.0.0.1:8001/v1"
    assert registry.port_of(embed.name) == 8002


def test_the_commented_external_engine_in_the_example_is_valid_too() -> None:
    # Uncomment the external block and the alternative route, as the comments tell a reader to.
    text = EXAMPLE.read_text()
    block = text[text.index("# [[deployments]]") : text.index("# Per role")]
    text = text.replace(block, re.sub(r"(?m)^# ?", "", block))
    text = text.replace('decide = ["qwen3-8b"]\n# decide', "decide")
    registry = parse_models_file(text, name="example")
    assert [d.name for d in registry.chain("decide")] == ["qwen3-32b-shared", "qwen3-8b"]
    assert registry.port_of("qwen3-32b-shared") is None
    assert registry.url_of("qwen3-32b-shared") == "http://10.0.0.12:8000/v1"


def test_a_valid_file_and_its_defaults() -> None:
    registry = parse_models_file(VALID, name="models.toml")
    assert [d.name for d in registry.deployments] == ["gemma", "minilm"]
    assert registry.get("gemma") is not None
    assert registry.chain("extract")[0].name == "gemma"
    assert registry.get("minilm").max_in_flight == 8  # type: ignore[union-attr]


def test_syntax_error_carries_tomllibs_line() -> None:
    text = VALID.replace('roles = ["embed"]', 'roles = ["embed"')
    error = error_for(text)
    expected = line_of(text, 'roles = ["embed"') + 1  # the parser notices on the next line
    assert error.line in (expected - 1, expected)
    assert str(error).startswith(f"models.toml:{error.line}: invalid TOML: ")


def test_unknown_role_names_line_deployment_and_key() -> None:
    text = VALID.replace('roles = ["decide", "extract"]', 'roles = ["decide", "plan"]')
    error = error_for(text)
    line = line_of(text, '"plan"')
    assert error.line == line
    assert str(error).startswith(
        f"models.toml:{line}: deployments[0] (name \"gemma\").roles: unknown roles ['plan']"
    )


def test_duplicate_name_points_at_the_second_one() -> None:
    text = VALID.replace('name = "minilm"', 'name = "gemma"')
    error = error_for(text)
    assert error.line == line_of(text, 'name = "gemma"', occurrence=2)
    assert 'deployments[1] (name "gemma").name' in str(error)
    assert f"deployments[0] (line {line_of(text, '[[deployments]]')}) already has" in str(error)


def test_route_to_unknown_deployment() -> None:
    text = VALID + '\n[routes]\ndecide = ["gemma", "llama"]\n'
    error = error_for(text)
    assert error.line == line_of(text, "decide = [")
    assert "routes.decide: no deployment named 'llama'" in str(error)


def test_route_checks_role_and_what_the_deployment_serves() -> None:
    text = VALID + '\n[routes]\nembed = ["gemma"]\nplan = ["gemma"]\n'
    message = str(error_for(text))
    assert f"models.toml:{line_of(text, 'embed = [')}: routes.embed: deployment 'gemma'" in message
    assert f"models.toml:{line_of(text, 'plan = [')}: routes.plan: unknown role" in message


def test_external_without_url() -> None:
    text = VALID.replace('device = "gpu"\ngpus = [0]', 'kind = "external"')
    error = error_for(text)
    assert error.line == line_of(text, "[deployments.placement]")
    assert 'deployments[0] (name "gemma").placement: an external placement needs url' in str(error)


def test_gpu_without_gpus() -> None:
    text = VALID.replace("gpus = [0]\n", "")
    error = error_for(text)
    assert error.line == line_of(text, "[deployments.placement]")
    assert "placement: a gpu placement needs gpus" in str(error)


def test_embed_without_dim() -> None:
    text = VALID.replace("capabilities = { embedding_dim = 384 }\n", "")
    error = error_for(text)
    assert error.line == line_of(text, 'roles = ["embed"]')
    assert 'deployments[1] (name "minilm").roles: an embedding deployment needs' in str(error)


def test_embedding_dim_must_match_the_store() -> None:
    text = VALID.replace("embedding_dim = 384", "embedding_dim = 1024")
    error = error_for(text, embedding_dim=384)
    assert error.line == line_of(text, "embedding_dim = 1024")
    assert "1024, but the document store keeps 384-dimensional vectors" in str(error)


def test_every_problem_is_reported_in_line_order() -> None:
    text = (
        VALID.replace("gpus = [0]", "gpus = [0, 0]")
        .replace('model = "/models/all-MiniLM-L6-v2"', "model = 7")
        .replace("[[deployments]]", "colour = 'blue'\n\n[[deployments]]", 1)
    )
    error = error_for(text)
    lines = [int(line.split(":")[1]) for line in str(error).splitlines()]
    assert lines == sorted(lines)
    assert lines == [line_of(text, "colour"), line_of(text, "[deployments.placement]"),
                     line_of(text, "model = 7")]  # fmt: skip
    assert "colour: unknown key" in str(error)
    assert "gpus must not repeat" in str(error)
    assert "model: Input should be a valid string" in str(error)


def test_unknown_key_in_a_deployment() -> None:
    text = VALID.replace('model = "/models/gemma-3-1b"', 'model = "/m"\nmodle = "/m"')
    error = error_for(text)
    assert error.line == line_of(text, "modle")
    assert 'deployments[0] (name "gemma").modle: unknown key' in str(error)


def test_ports_must_not_collide() -> None:
    # The first engine takes 8001 by position; the second asks for it explicitly.
    text = VALID.replace("gpus = [0]", "gpus = [0]\n").replace(
        "capabilities = { embedding_dim = 384 }",
        "capabilities = { embedding_dim = 384 }\nplacement = { port = 8001 }",
    )
    error = error_for(text)
    assert error.line == line_of(text, "placement = { port")
    assert "port 8001 is already used by 'gemma'" in str(error)


def test_no_deployments_and_wrong_shapes() -> None:
    assert "declares no [[deployments]]" in str(error_for("deployments = []\n"))
    single = error_for('[deployments]\nname = "x"\n')
    assert single.line == 1
    assert "[[deployments]] table (two brackets)" in str(single)
    assert "routes: must be a table" in str(error_for('routes = "decide"\n' + VALID))


def test_missing_file_and_relative_template(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match=r"models\.toml: cannot read the models file"):
        load_models_file(tmp_path / "models.toml")
    path = tmp_path / "models.toml"
    path.write_text(
        VALID.replace(
            "[deployments.placement]",
            'capabilities = { chat_template = "t.jinja" }\n[deployments.placement]',
        )
    )
    gemma = load_models_file(path).get("gemma")
    assert gemma is not None
    assert gemma.capabilities.chat_template == tmp_path / "t.jinja"
