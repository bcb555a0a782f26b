"""The application factory: settings and a database URL in, a FastAPI app out.

This module wires the pieces (routers, error handlers, middleware, lifespan) and does nothing
else; it reads no environment and opens nothing at import. The caller either lends it a
`Services` it keeps owning (`garrison up` runs API and worker on one event loop) or lets the
lifespan open and close the app's own, on the loop that serves it: SQLAlchemy's async engine
belongs to the loop it was first used on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.middleware import Middleware

from agent.api.access import apply_role_table
from agent.api.document_schemas import DOCUMENT_UPLOAD_PATHS
from agent.api.errors import install_error_handlers
from agent.api.limits import BodyLimitMiddleware
from agent.api.requestid import RequestIdMiddleware
from agent.api.routes import approvals, documents, effects, health, models, runs, search
from agent.api.routes import events as run_events
from agent.api.routes import forks as run_forks
from agent.runtime import Services, Settings, open_services

DESCRIPTION = (
    "Submit agent runs, read them step by step, manage the documents agents search, and see "
    "which models serve them. "
    "Every `/v1` route needs `Authorization: Bearer gk_...` from a key holding the role the "
    "operation names (`x-required-role`; 403 `forbidden` otherwise); every error answers "
    '`{"error": {"code", "message", "request_id"}}` and carries an `X-Request-ID` header.'
)


def _version() -> str:
    try:
        return version("garrison")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def create_app(settings: Settings, url: str, *, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            yield  # lent by the caller, who closes it
            return
        # upgrade=False: migrating is the operator's decision (`garrison db upgrade`), not a
        # side effect of starting an API replica.
        owned = await open_services(settings, url, upgrade=False)
        app.state.services = owned
        try:
            yield
        finally:
            del app.state.services
            await owned.aclose()

    app = FastAPI(
        title="Garrison",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a public CDN: on an appliance that must
        # never call out they would be blank pages. The schema itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
        # Listed outermost first: the request id must exist before a 413 is written.
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                BodyLimitMiddleware,
                max_body_bytes=settings.api.max_body_bytes,
                path_limits=dict.fromkeys(
                    DOCUMENT_UPLOAD_PATHS,
                    max(settings.api.max_body_bytes, settings.api.max_document_body_bytes),
                ),
            ),
        ],
    )
    if services is not None:
        app.state.services = services
    install_error_handlers(app)
    for module in (runs, effects, documents, search, models, health):
        app.include_router(module.router)
    app.include_router(run_events.router)
    app.include_router(run_forks.router)
    app.include_router(approvals.router)
    # Last, after every router: refuses an app with a route the role table does not cover.
    apply_role_table(app)
    return app
