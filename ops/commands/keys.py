"""`garrison keys create|list|revoke`: API keys, whose secrets are shown once and never stored."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated

import typer

from agent.domain import ApiKey, Role
from agent.errors import NotFound
from ops.errors import CliError
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, with_services

app = typer.Typer(
    help="API keys: each maps a caller to one tenant, its roles and, optionally, access tags."
)

ONCE_WARNING = "this secret is shown once and cannot be recovered; store it now"


@app.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant the key acts for.")],
    name: Annotated[str, typer.Option("--name", "-n", help="A label to tell keys apart.")] = "cli",
    roles: Annotated[
        list[Role] | None, typer.Option("--role", help="A role (repeat); default: client.")
    ] = None,
    access_tags: Annotated[
        list[str] | None,
        typer.Option(
            "--access-tag",
            help="Only documents carrying this tag exist for the key (repeat: any of them); "
            "default: the whole tenant.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Mint an API key and print its secret, once."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        minting = rt.caller.principal
        key, secret = await rt.services.keys.create(
            rt.caller.scope(tenant),
            name,
            roles or [Role.CLIENT],
            actor=rt.caller.actor,
            access_tags=access_tags,
            # A restricted key minting keys: theirs must stay within its own tags.
            creator_access_tags=None if minting is None else minting.access_tags,
        )

        def human() -> None:
            out.line(f"created API key {key.id} for tenant {key.tenant_name}")
            out.fields(
                [
                    ("name", key.name),
                    ("roles", ", ".join(key.roles)),
                    ("access tags", _scope(key)),
                    ("secret", secret),
                ]
            )
            out.say(f"warning: {ONCE_WARNING}")

        out.emit({"key": key, "secret": secret, "warning": ONCE_WARNING}, human)

    with_services(ctx, out, body)


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List API keys (never their secrets)."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        keys = await rt.services.keys.list(rt.caller.scope(tenant))
        rows = [
            [
                str(k.id),
                k.prefix + "…",
                k.name,
                ",".join(k.roles),
                _scope(k),
                k.tenant_name,
                when(k.created_at),
                when(k.last_used_at, "never"),
                when(k.revoked_at, "no"),
            ]
            for k in keys
        ]
        headers = [
            "ID",
            "PREFIX",
            "NAME",
            "ROLES",
            "ACCESS TAGS",
            "TENANT",
            "CREATED",
            "LAST USED",
            "REVOKED",
        ]
        out.emit({"keys": keys}, lambda: out.table(headers, rows, empty="no API keys"))

    with_services(ctx, out, body)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[uuid.UUID, typer.Argument(help="The key's id, as `keys list` shows it.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Revoke an API key: every request with it fails from now on."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        # Another tenant's key is not found by a key, as any other object.
        key = _find(await rt.services.keys.list(rt.caller.scope(None)), key_id)
        if key.revoked_at is None and not yes:
            _confirm(key)
        revoked = await rt.services.keys.revoke(key_id, actor=rt.caller.actor)
        already = key.revoked_at is not None
        out.emit(
            {"key": revoked, "already_revoked": already},
            lambda: out.line(
                f"API key {revoked.id} ({revoked.prefix}…, {revoked.name}) "
                f"{'was already revoked' if already else 'revoked'} at {when(revoked.revoked_at)}"
            ),
        )

    with_services(ctx, out, body)


def _scope(key: ApiKey) -> str:
    """A key's access tags as people read them: the tags, or that it sees its whole tenant."""
    return "(all)" if key.access_tags is None else ",".join(key.access_tags)


def _find(keys: list[ApiKey], key_id: uuid.UUID) -> ApiKey:
    for key in keys:
        if key.id == key_id:
            return key
    raise NotFound(f"API key {key_id} not found")


def interactive() -> bool:
    """Is there a person at a terminal to answer a question?"""
    return sys.stdin.isatty()


def _confirm(key: ApiKey) -> None:
    question = f"Revoke API key {key.prefix}… ({key.name}) of tenant {key.tenant_name}?"
    # Without a terminal nobody can answer; waiting on stdin would hang a script or CI job.
    if not interactive():
        raise CliError(
            "confirmation_required",
            f"{question} Refusing without confirmation: no terminal to ask on; pass -y/--yes",
        )
    # The prompt goes to stderr so that stdout stays one JSON document under --json.
    if not typer.confirm(question, err=True):
        raise CliError("cancelled", "not revoked")
