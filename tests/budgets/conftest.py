"""The CLI fixtures, for the `garrison budgets` tests kept beside the other budget tests."""

from tests.cli.conftest import cli, cli_env, no_ambient_garrison_env

__all__ = ["cli", "cli_env", "no_ambient_garrison_env"]
