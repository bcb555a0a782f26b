"""`garrison models ...`: the model registry (list, health, sync) and engine control.

Engine commands (serve, stop, status, logs, import-gguf) are registered on this same app from
`ops.commands.engines`, so both halves share one `models` noun. `list` shows the registry as last
synced into the database; `health` asks the engines themselves and needs no database.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agent.domain import ModelDeploymentRecord, ModelSync
from agent.runtime import Settings, open_router
from ops.output import JsonFlag, Output, when
from ops.runtime import Runtime, execute, with_services
from serving.client import display_url
from serving.health import DeploymentHealth
from serving.registry_source import RegistrySource

app = typer.Typer(help="Model deployments: what serves which role, their engines and health.")


def _placement(placement: dict[str, Any]) -> str:
    if placement.get("kind") == "external":
        return f"external {display_url(str(placement.get('url') or ''))}"
    gpus = placement.get("gpus") or []
    where = f"gpu {','.join(str(g) for g in gpus)}" if gpus else str(placement.get("device"))
    return f"local {where}"


def _listed(record: ModelDeploymentRecord) -> dict[str, Any]:
    spec = record.spec
    placement = dict(spec.get("placement") or {})
    if placement.get("url"):
        placement["url"] = display_url(str(placement["url"]))  # never print credentials
    return {
        "name": record.name,
        "roles": list(record.roles),
        "placement": placement,
        "model": spec.get("model"),
        "served_model_name": spec.get("served_model_name"),
        "capabilities": spec.get("capabilities") or {},
        "max_in_flight": spec.get("max_in_flight"),
        "updated_at": record.updated_at,
    }


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the deployments as last synced into the database."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        listed = [_listed(r) for r in await rt.services.catalog.list_deployments()]
        rows = [
            [
                d["name"],
                ",".join(d["roles"]),
                _placement(d["placement"]),
                str(d["model"]),
                str(d["capabilities"].get("context_length", "-")),
                when(d["updated_at"]),
            ]
            for d in listed
        ]
        out.emit(
            {"deployments": listed},
            lambda: out.table(
                ["NAME", "ROLES", "PLACEMENT", "MODEL", "CONTEXT", "UPDATED"],
                rows,
                empty="no deployments synced yet: run `garrison models sync`",
            ),
        )

    with_services(ctx, out, body)


@app.command("sync")
def sync(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Store the active registry (models file, endpoint URLs or bundled) in the database."""
    out = Output(json_out)

    async def body(rt: Runtime) -> None:
        report = await rt.services.catalog.sync(actor=rt.caller.actor)
        source = rt.services.source.description

        def human() -> None:
            changes = [
                f"{label} {', '.join(names)}"
                for label, names in (
                    ("added", report.added),
                    ("changed", report.changed),
                    ("removed", report.removed),
                )
                if names
            ]
            if changes:
                out.line(f"synced from {source}: {'; '.join(changes)}")
            else:
                out.line(f"already in sync with {source} ({len(report.unchanged)} deployment(s))")

        out.emit({"source": source, **_asdict(report)}, human)

    with_services(ctx, out, body)


def _asdict(report: ModelSync) -> dict[str, list[str]]:
    return {k: list(getattr(report, k)) for k in ("added", "changed", "removed", "unchanged")}


@app.command("health")
def health(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=60, help="Seconds to wait for each engine.")
    ] = 3.0,
    json_out: JsonFlag = False,
) -> None:
    """Probe every deployment now: does it answer, its circuit, its calls in flight."""
    out = Output(json_out)

    async def main(settings: Settings) -> None:
        source, router = open_router(settings.serving)
        try:
            found = await router.health(timeout)
            roles = {
                role: [lane.name for lane in router.chain(role)] for role in sorted(_roles(found))
            }
        finally:
            await router.aclose()
        ok = {h.name for h in found if h.ok}
        payload = {
            "source": source.description,
            "deployments": found,
            "roles": {r: {"ok": any(n in ok for n in c), "chain": c} for r, c in roles.items()},
        }
        out.emit(payload, lambda: _print_health(out, source, found, roles, ok))

    execute(ctx, out, main)


def _roles(found: list[DeploymentHealth]) -> set[str]:
    return {role for h in found for role in h.roles}


def _print_health(
    out: Output,
    source: RegistrySource,
    found: list[DeploymentHealth],
    roles: dict[str, list[str]],
    ok: set[str],
) -> None:
    out.line(f"registry: {source.description}")
    rows = [
        [h.name, ",".join(h.roles), h.kind, h.url, "ok" if h.ok else "down", h.breaker,
         str(h.in_flight)]
        for h in found
    ]  # fmt: skip
    headers = ["NAME", "ROLES", "KIND", "URL", "STATUS", "BREAKER", "IN-FLIGHT"]
    empty = f"no deployments: nothing serves any role; {source.how_to_configure('decide')}"
    out.table(headers, rows, empty=empty)
    for h in found:
        if not h.ok:
            out.line(f"{h.name}: {h.detail}")
    for role, chain in roles.items():
        serving = next((n for n in chain if n in ok), None)
        out.line(f"role {role}: " + (f"served by {serving}" if serving else "UNAVAILABLE"))
