"""`GET /v1/runs/{run_id}/events`: a run's events as Server-Sent Events.

The run is looked up in a dependency, so an unknown or foreign run is a plain 404 (and an
unreachable database a 503) before any byte of the stream is sent. The stream itself is
`agent.events`; this module only encodes it and reads the resume cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from agent.api.deps import AUTHORIZED, PrincipalDep, RunId, ServicesDep
from agent.api.errors import error_responses
from agent.api.event_schemas import RunEventOut
from agent.api.schemas import RUNS_PATH
from agent.errors import CallerError
from agent.events import Idle, Watch

router = APIRouter(prefix=RUNS_PATH, tags=["runs"], dependencies=AUTHORIZED)

HEARTBEAT = "heartbeat"
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


def _json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The usual error documentation, as JSON: given a `model`, FastAPI would file it under
    this route's own media type, and errors are never an event stream."""
    documented = error_responses(*statuses)
    return {
        status: {
            **{k: v for k, v in entry.items() if k != "model"},
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status, entry in documented.items()
    }


def _event_id(value: str) -> int:
    try:
        parsed = int(value)
    except ValueError:
        raise CallerError("Last-Event-ID must be an event id this stream sent") from None
    return parsed


async def open_watch(
    run_id: RunId,
    principal: PrincipalDep,
    services: ServicesDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Resume after this event id; browsers send it when they reconnect.",
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, description="Resume after this event id (when no `Last-Event-ID` is sent)."),
    ] = None,
) -> Watch:
    # The header wins: an EventSource reconnects to the same URL (with its `after`) and adds
    # the header, which then names the newer position.
    # A blank header is no cursor: browsers only send one they were given.
    given = last_event_id.strip() if last_event_id is not None else ""
    cursor = _event_id(given) if given else after
    return await services.events.open(
        run_id, principal.tenant_id, after=cursor, access_tags=principal.access_tags
    )


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    summary="Stream a run's events",
    description=(
        "Server-Sent Events: every state change and committed step of the run, oldest first, "
        "from the start or after `Last-Event-ID` / `?after=`, then live as they commit. Each "
        "event has `id:` (the event id), `event:` (`state` or `step`) and `data:` (a "
        "`RunEventOut` JSON object); a quiet stream sends `: heartbeat` comments. The stream "
        "ends after the run's final state."
    ),
    response_description="The run's events as Server-Sent Events (`text/event-stream`).",
    responses=_json_errors(401, 403, 404, 422, 500, 503),
)
async def stream_events(
    watch: Annotated[Watch, Depends(open_watch)],
) -> AsyncIterator[RunEventOut]:
    # The annotation names each event's `data` for the OpenAPI document; FastAPI sends
    # `ServerSentEvent` items as they are (with their id and event name), which is what is
    # yielded, hence the ignores.
    # aclosing: a client that goes away cancels this generator, and the watch inside it must
    # unsubscribe now rather than whenever the garbage collector finalises it.
    async with aclosing(watch.follow()) as items:
        async for item in items:
            if isinstance(item, Idle):
                yield ServerSentEvent(comment=HEARTBEAT)  # type: ignore[misc]
            else:
                data = RunEventOut.from_event(item)
                yield ServerSentEvent(data=data, event=item.kind, id=str(item.id))  # type: ignore[misc]
