"""`garrison models ...`: the model registry (list, health, sync) and engine control.

Engine commands (serve, stop, status, logs, import-gguf) are registered on this same app from
`ops.commands.engines`, so both halves share one `models` noun.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Model deployments: what serves which role, their engines and health.")
