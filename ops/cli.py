"""The `garrison` command: the root app, its nouns, and the entry point.

Only wiring lives here: which command group answers which noun, the root callback that builds
the settings once, and the group class that makes usage errors look like every other error
(`error[usage]: ...`, exit 2). The commands themselves live in `ops.commands.*`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

# Imported for its side effect: it adds the engine commands (serve, stop, ...) to `models`.
import ops.commands.engines  # noqa: F401
from ops.commands import (
    agents,
    approvals,
    audit,
    budgets,
    db,
    docs,
    engine,
    keys,
    models,
    outbox,
    policies,
    runs,
    search,
    tenants,
    up,
    worker,
)
from ops.errors import CALLER
from ops.output import Output
from ops.runtime import CliState


class GarrisonGroup(TyperGroup):
    """Reports usage errors in the CLI's own format, in JSON when `--json` was asked for."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        out = Output(json_mode="--json" in argv)
        try:
            # Not standalone, so that parse errors reach us instead of being printed by typer.
            result = super().main(
                argv,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = result if isinstance(result, int) else 0
        except typer.TyperException as exc:
            usage = exc.exit_code == 2
            hint = _help_hint(exc) if usage else ""
            out.error("usage" if usage else "invalid_request", exc.format_message() + hint)
            code = exc.exit_code
        except typer.Abort:
            out.error("aborted", "aborted")
            code = CALLER
        if standalone_mode:
            sys.exit(code)
        return code


def _help_hint(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f" (see `{path} --help`)" if path else ""


app = typer.Typer(
    cls=GarrisonGroup,
    name="garrison",
    help="Operate a Garrison appliance: the API, workers, tenants, keys, documents and runs.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks with locals could print secrets (API keys, database URLs) from a frame.
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="GARRISON_API_KEY",
            show_envvar=True,
            help="Act as this API key (its roles, its tenant only) instead of as the local "
            "administrator. Prefer the variable: a command line is visible to other users.",
        ),
    ] = None,
) -> None:
    """Garrison: the model decides, code does everything else.

    Configuration comes from GARRISON_* environment variables (GARRISON_DATABASE_URL,
    GARRISON_DATA_DIR, GARRISON_CHAT_URL, GARRISON_EMBED_URL, ...).
    """
    ctx.obj = CliState(key)


app.command("up")(up.up)
app.command("serve")(up.serve)
app.command("worker")(worker.worker)
app.add_typer(db.app, name="db")
app.add_typer(tenants.app, name="tenants")
app.add_typer(agents.app, name="agents")
app.add_typer(keys.app, name="keys")
app.add_typer(docs.app, name="docs")
app.command("search")(search.search)
app.command("reindex")(search.reindex)
app.command("calibrate")(search.calibrate)
app.add_typer(runs.app, name="runs")
app.add_typer(outbox.app, name="outbox")
app.add_typer(policies.app, name="policies")
app.add_typer(approvals.app, name="approvals")
app.add_typer(budgets.app, name="budgets")
app.add_typer(models.app, name="models")
app.add_typer(engine.app, name="engine")
app.add_typer(audit.app, name="audit")


def main() -> None:
    app(prog_name="garrison")


if __name__ == "__main__":
    main()
