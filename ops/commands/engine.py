"""`garrison engine ...`: the vLLM engine's own virtualenv (never the application's)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The vLLM engine environment: install and check it.")
