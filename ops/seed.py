"""The demo that `garrison up` seeds: tenant `demo`, agent `assistant`, a key, five documents,
and records (customers, orders, a state record: `ops.demo_records`).

Every part is idempotent, so each `up` runs the seed again and only fills in what is missing:
the tenant is created if absent; the agent is created if absent but never overwritten (an
operator may have edited it); the key is reused while it still authenticates; documents are
deduplicated by content hash. Documents need the embedding model; without one they are left
for the next `up` that finds it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from agent.domain import Role
from agent.errors import NotFound, Unauthorized
from agent.formats import DocumentFormat
from agent.runtime import Services
from agent.services.document_input import DocumentInput
from ops import demo_records
from ops.documents import title_of
from ops.errors import INFRASTRUCTURE, CliError
from serving.errors import ServingError

DEMO_TENANT = "demo"
DEMO_AGENT = "assistant"
DEMO_KEY_NAME = "demo"
KEY_FILE = "demo-api-key"
DEMO_QUESTION = "How many days of annual leave do I get, and how many can I carry over?"

INSTRUCTIONS = (
    "You are Northwind Instruments' internal assistant. Answer questions from the "
    "organisation's documents only: search them when the passages you were given are not "
    "enough, and cite the title of every document you used. If the documents do not answer "
    "the question, say so plainly instead of guessing."
)


@dataclass
class SeedReport:
    key_file: Path
    secret: str
    key_created: bool
    agent_created: bool
    documents_added: list[str] = field(default_factory=list)
    documents_present: int = 0
    documents_skipped: str | None = None
    """Why the documents were not loaded (no embedding model), or None when they were."""


def demo_documents() -> list[tuple[str, str]]:
    """(file name, text) of the bundled demo documents, in a stable order."""
    folder = files("ops") / "demo"
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".md")
    )


FULL_TOOLS = ("search_documents", "finish")
ANSWER_ONLY_TOOLS = ("finish",)
"""For the bundled 270M base model: it cannot plan multi-step tool use (it repeats a search
forever), but it can answer from the passages the loop retrieves before the first decision."""


def demo_tools(origin: str) -> tuple[str, ...]:
    return ANSWER_ONLY_TOOLS if origin == "bundled" else FULL_TOOLS


async def seed_demo(
    services: Services,
    data_dir: Path,
    *,
    actor: str,
    load_documents: bool = True,
    tools: Sequence[str] = FULL_TOOLS,
) -> SeedReport:
    tenancy = services.tenancy
    try:
        tenant = await tenancy.require_tenant(DEMO_TENANT)
    except NotFound:
        tenant = await tenancy.create_tenant(DEMO_TENANT, actor=actor)
    agents = await tenancy.list_agents(DEMO_TENANT)
    agent_created = not any(a.name == DEMO_AGENT for a in agents)
    if agent_created:
        await tenancy.put_agent(
            DEMO_TENANT, DEMO_AGENT, instructions=INSTRUCTIONS, tools=tools, actor=actor
        )

    await _seed_records(services, tenant.id)

    key_file = data_dir / KEY_FILE
    secret = await _usable_secret(services, key_file, tenant.id)
    key_created = secret is None
    if secret is None:
        _key, secret = await services.keys.create(
            DEMO_TENANT, DEMO_KEY_NAME, [Role.CLIENT], actor=actor
        )
        _write_secret(key_file, secret)
    report = SeedReport(key_file, secret, key_created, agent_created)

    if not load_documents:
        report.documents_skipped = "no embedding model is reachable"
        return report
    try:
        for name, text in demo_documents():
            outcome = await services.documents.store(
                tenant.id,
                DocumentInput(
                    text=text,
                    title=title_of(Path(name), text),
                    format=DocumentFormat.MARKDOWN,
                    source=f"garrison demo: {name}",
                ),
            )
            if outcome.status == "unchanged":
                report.documents_present += 1
            else:
                report.documents_added.append(name)
    except ServingError as exc:
        report.documents_skipped = f"the embedding model failed: {exc.code}: {exc.message}"
    return report


async def _seed_records(services: Services, tenant_id: uuid.UUID) -> None:
    """The demo's customers and orders (read through `sql_query`'s views) and one state record;
    what is already there is left alone."""
    store = services.store
    await store.org_data.load(tenant_id, demo_records.CUSTOMERS, demo_records.ORDERS)
    if await store.records.get(tenant_id, demo_records.PREFERENCES_KEY) is None:
        await store.records.write(
            tenant_id,
            demo_records.PREFERENCES_KEY,
            type="customer_preferences",
            owner="crm",
            data=demo_records.PREFERENCES,
            valid_until=None,
            expected_version=0,
        )


async def _usable_secret(services: Services, key_file: Path, tenant_id: uuid.UUID) -> str | None:
    """The stored demo key, if it still authenticates for the demo tenant of this database."""
    secret = _read_secret(key_file)
    if secret is None:
        return None
    try:
        principal = await services.keys.authenticate(secret)
    except Unauthorized:  # revoked, or minted for another database
        return None
    return secret if principal.tenant_id == tenant_id else None


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:  # missing or unreadable: a fresh key replaces it
        return None


def _write_secret(path: Path, secret: str) -> None:
    # A local demo convenience, not a secret store: the key is kept in plain text so every
    # `garrison up` can print a ready-to-paste curl command. It is a client-role key of the demo
    # tenant only, and the file is private to this user (0600, written via a temp file so a
    # reader never sees it half-written or with wider permissions).
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(
            "data_dir_unwritable", f"cannot write the demo key to {path}: {exc}", INFRASTRUCTURE
        ) from exc
