"""The ingestion pipeline: load, check, chunk, embed in batches, commit in batches.

Documents stream through in groups of about `ingest_group_chunks` chunks, so memory stays flat
however large the input. Per group: the stored versions are looked up by key and unchanged
documents skipped before any model time is spent; the changed ones are embedded in one call
through the serving layer's embed role; the group is committed in one transaction. Three groups
are in flight at once: one being read, chunked and looked up, one being embedded, one being
committed, so the database (and the chunking) work in the embedder's shadow. The last group goes
in parts of halving size, each committed while the next is embedded, so that little is left to
commit after the last embedding. A document that cannot be read or is invalid becomes a `failed`
outcome with its reason and the rest go on, and so does one a restricted caller may not write
(it would not carry one of the caller's access tags, or would replace a document that does not:
`agent.services.access`); a failing model or database aborts the run, since
every later document would fail the same way.

A bulk load drops the vector index first and has it built again before it returns: after the
last group, or, when embedding is the slower side, concurrently while the last groups are still
being embedded (`index_timing` decides from the rates the run measures).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.domain import Document, DocumentWrite, NewDocument, WriteStatus
from agent.errors import CallerError, Conflict
from agent.formats import UnreadableDocument
from agent.ports import DocumentStore, Embedder
from agent.services.access import AccessTagRequired, AccessTags, require_access_tag, visible
from agent.services.document_input import DocumentInput, PreparedDocument, prepare
from agent.services.index_timing import LoadRates, start_build_now
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

MAX_GROUP_DOCUMENTS = 500
TAIL_CHUNKS = 16
"""The last group is split in halves down to about this many chunks (see `tail_parts`)."""
FAILED = "failed"
UNCHANGED = WriteStatus.UNCHANGED.value


@dataclass(frozen=True, slots=True)
class PendingDocument:
    label: str
    """What the document is called in reports: a path, `documents[3]`."""
    load: Callable[[], DocumentInput]
    """Reads it; may raise `UnreadableDocument` or `CallerError`. Runs in a worker thread."""


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    label: str
    status: str
    """`created`, `updated`, `unchanged` or `failed`."""
    document: Document | None = None
    reason: str | None = None
    code: str | None = None
    """A failure's stable code when it has one (`unreadable_document`, `access_tag_required`);
    None for a document whose fields are not valid, and unless `failed`."""


@dataclass(frozen=True, slots=True)
class IngestProgress:
    documents: int
    """Outcomes so far, failures included."""
    failed: int
    chunks: int
    """Chunks embedded and committed so far."""
    elapsed_s: float
    latest: tuple[IngestOutcome, ...]
    """The outcomes recorded since the previous report."""


Progress = Callable[[IngestProgress], None]


class Ingestor:
    def __init__(self, store: DocumentStore, embedder: Embedder, settings: AgentSettings) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings

    async def run(
        self,
        tenant_id: uuid.UUID,
        items: Iterable[PendingDocument],
        *,
        expected_chunks: int = 0,
        progress: Progress | None = None,
        access_tags: AccessTags = None,
    ) -> list[IngestOutcome]:
        bulk = expected_chunks >= self._settings.bulk_load_min_chunks and (
            expected_chunks > await self._store.count_chunks()
        )
        run = _Run(self, tenant_id, progress, expected_chunks if bulk else None, access_tags)
        if bulk:
            await self._store.drop_vector_index()
        try:
            await run.consume(items)
        finally:
            if bulk:
                # Also after a failure: searches must not be left without their index.
                await run.finish_index()
        return [outcome for _, outcome in sorted(run.outcomes, key=lambda pair: pair[0])]


class _Run:
    """One pipeline run: its groups in flight, what it measured, and the outcomes in input order."""

    def __init__(
        self,
        owner: Ingestor,
        tenant_id: uuid.UUID,
        progress: Progress | None,
        bulk_chunks: int | None,
        access_tags: AccessTags = None,
    ) -> None:
        self._store = owner._store
        self._embedder = owner._embedder
        self._settings = owner._settings
        self._tenant_id = tenant_id
        self._access_tags = access_tags
        """The writer's scope: what it stores, and what it replaces, must carry one of these."""
        self._progress = progress
        self._started = time.perf_counter()
        self._writing: asyncio.Task[None] | None = None
        self._planning: tuple[list[_Entry], asyncio.Task[list[_Planned]]] | None = None
        """The group being looked up and embedded, and that work."""
        self._writing_keys: set[str] = set()
        """The keys of the group last sent to be written."""
        self._chunks_done = 0
        self._bulk_chunks = bulk_chunks
        """The chunks a bulk load expects (its index was dropped); None when not a bulk load."""
        self._building: asyncio.Task[bool] | None = None
        self._planned_rows = 0
        self._embed_calls = 0
        self._embedded = 0
        self._embed_s = 0.0
        self._written = 0
        self._write_s = 0.0
        self.outcomes: list[tuple[int, IngestOutcome]] = []
        """(input position, outcome), in the order they were decided."""

    async def consume(self, items: Iterable[PendingDocument]) -> None:
        group: list[_Entry] = []
        size = 0
        try:
            for position, item in enumerate(items):
                prepared = await asyncio.to_thread(self._load, item)
                if isinstance(prepared, IngestOutcome):
                    self._record([(position, prepared)])
                    continue
                # Two versions of one key in a group would share one commit: start a new one.
                if any(p.key == prepared.key for _, p in group):
                    await self._flush(group)
                    group, size = [], 0
                group.append((position, prepared))
                size += len(prepared.chunks)
                if size >= self._settings.ingest_group_chunks or len(group) >= MAX_GROUP_DOCUMENTS:
                    await self._flush(group)
                    group, size = [], 0
            for part in tail_parts(group, TAIL_CHUNKS):
                await self._flush(part)
            await self._write_planned()
        except BaseException:
            # The run is failing: a group still being embedded is not written.
            await self._abandon_planning()
            raise
        finally:
            await self._await_write()

    def _load(self, item: PendingDocument) -> PreparedDocument | IngestOutcome:
        try:
            prepared = prepare(item.label, item.load(), self._settings)
            require_access_tag("the document", prepared.tags, self._access_tags)
        except (UnreadableDocument, AccessTagRequired) as exc:
            return IngestOutcome(item.label, FAILED, reason=exc.message, code=exc.code)
        except CallerError as exc:  # not a valid document (its fields): no code of its own
            return IngestOutcome(item.label, FAILED, reason=exc.message)
        return prepared

    async def _flush(self, group: list[_Entry]) -> None:
        """Have `group` embedded while the next one is read; the one before goes to be written.

        Its stored versions are looked up at once, while the group before is still being
        embedded, unless a group not yet committed holds an earlier version of one of its keys:
        then only once that is committed (looked up before, a version equal to the one stored
        would pass for unchanged and be skipped, leaving the earlier one behind).
        """
        prepared = [p for _, p in group]
        keys = {p.key for p in prepared}
        uncommitted = set(self._writing_keys)
        if self._planning is not None:
            uncommitted.update(p.key for _, p in self._planning[0])
        lookup = None if keys & uncommitted else asyncio.create_task(self._lookup(prepared))
        try:
            await self._write_planned()
            if lookup is None:
                await self._await_write()
                lookup = asyncio.create_task(self._lookup(prepared))
        except BaseException:
            if lookup is not None:
                lookup.cancel()
                await asyncio.gather(lookup, return_exceptions=True)
            raise
        self._planning = (group, asyncio.create_task(self._plan(prepared, lookup)))

    async def _abandon_planning(self) -> None:
        if self._planning is not None:
            (_, planning), self._planning = self._planning, None
            planning.cancel()
            # Its own failure, if it had one, is not the one the run reports.
            await asyncio.gather(planning, return_exceptions=True)

    async def _write_planned(self) -> None:
        """Wait for the group being embedded, then commit it once the group before it is in."""
        if self._planning is None:
            return
        (group, planning), self._planning = self._planning, None
        planned = await planning
        await self._await_write()
        self._writing = asyncio.create_task(self._write(group, planned))
        self._writing_keys = {p.key for _, p in group}
        self._maybe_start_index()

    def _maybe_start_index(self) -> None:
        if self._bulk_chunks is None or self._building is not None:
            return
        rates = LoadRates(self._embedded, self._embed_s, self._written, self._write_s)
        rows, group = self._planned_rows, self._settings.ingest_group_chunks
        if start_build_now(rates, rows, self._bulk_chunks - rows, group):
            # Writers go on during a concurrent build; the rows they add join the graph.
            self._building = asyncio.create_task(self._store.build_vector_index(concurrently=True))

    async def finish_index(self) -> None:
        """Have the vector index of a bulk load built: wait for the concurrent build started
        during the load, or build it now. A concurrent build that failed is done again here."""
        if self._building is not None:
            building, self._building = self._building, None
            try:
                await building
                return
            except Exception as exc:  # the blocking build below raises what is really wrong
                log.warning("the concurrent vector index build failed (%s); building it again", exc)
        await self._store.build_vector_index()

    async def _await_write(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _lookup(self, group: list[PreparedDocument]) -> dict[str, Document]:
        return await self._store.find_documents(self._tenant_id, [p.key for p in group])

    async def _plan(
        self,
        group: list[PreparedDocument],
        lookup: asyncio.Task[dict[str, Document]] | None = None,
    ) -> list[_Planned]:
        """Per document: what to write (embedding only changed content), or that it is current.
        `lookup`: the stored versions, being looked up already."""
        stored = await (lookup if lookup is not None else self._lookup(group))
        # A key held by a document the writer cannot see is not the writer's to replace: that
        # document must not change, nor be reported back (not even as unchanged).
        hidden = {k for k, d in stored.items() if not visible(d.tags, self._access_tags)}
        changed = [p for p in group if p.key not in hidden and p.content_changed(stored.get(p.key))]
        texts = [text for p in changed for text in p.embedding_inputs()]
        started = time.perf_counter()
        vectors = iter((await self._embedder.embed(texts)).vectors if texts else [])
        if self._embed_calls:  # the first call may have loaded the model: not the rate
            self._embed_s += time.perf_counter() - started
            self._embedded += len(texts)
        self._embed_calls += bool(texts)
        self._planned_rows += len(texts)
        planned = []
        for p in group:
            current = stored.get(p.key)
            if p.key in hidden:
                planned.append(_Planned(None, None, hidden=True))
            elif p.content_changed(current):
                own = [next(vectors) for _ in p.chunks]
                planned.append(_Planned(p.new_document(own), current))
            elif current is not None and p.labels_changed(current):
                planned.append(_Planned(p.new_document(None), current))
            else:
                planned.append(_Planned(None, current))
        return planned

    async def _write(self, group: list[_Entry], planned: list[_Planned]) -> None:
        started = time.perf_counter()
        try:
            writes = await self._store_planned(planned)
            if self._building is None:  # the write rate without the index, for index_timing
                self._write_s += time.perf_counter() - started
                self._written += sum(len(p.write.chunks or ()) for p in planned if p.write)
        except Conflict:
            # A concurrent writer replaced one of these meanwhile: once more, from fresh state.
            planned = await self._plan([p for _, p in group])
            writes = await self._store_planned(planned)
        outcomes = []
        for (position, prepared), plan in zip(group, planned, strict=True):
            write = writes.get(prepared.key)
            if plan.hidden or (plan.write is not None and write is None):
                # Hidden when looked up, or by the time it was written (retagged, or stored by
                # another writer, while this one was embedding): the store checked it again.
                outcome = _hidden(prepared)
            elif write is not None and plan.write is not None:
                outcome = IngestOutcome(prepared.label, write.status.value, write.document)
                self._chunks_done += len(plan.write.chunks or ())
            else:
                outcome = IngestOutcome(prepared.label, UNCHANGED, plan.current)
            outcomes.append((position, outcome))
        self._record(outcomes)

    async def _store_planned(self, planned: list[_Planned]) -> dict[str, DocumentWrite | None]:
        """Write what `planned` holds, under the writer's access tags: by key, None for one the
        store refused because the key held a document outside them."""
        writes = [p.write for p in planned if p.write is not None]
        stored = await self._store.write_documents(self._tenant_id, writes, self._access_tags)
        return {w.key: result for w, result in zip(writes, stored, strict=True)}

    def _record(self, outcomes: list[tuple[int, IngestOutcome]]) -> None:
        self.outcomes.extend(outcomes)
        if self._progress is not None:
            failed = sum(o.status == FAILED for _, o in self.outcomes)
            elapsed = time.perf_counter() - self._started
            latest = tuple(o for _, o in outcomes)
            self._progress(
                IngestProgress(len(self.outcomes), failed, self._chunks_done, elapsed, latest)
            )


_Entry = tuple[int, PreparedDocument]
"""A prepared document and its position in the input."""


def tail_parts(group: list[_Entry], smallest: int) -> list[list[_Entry]]:
    """The last group as parts of halving size (in chunks, whole documents each), down to about
    `smallest` chunks or one document: each part is committed while the next is embedded, so
    only the smallest part's commit comes after the last embedding."""
    parts: list[list[_Entry]] = []
    rest = group
    while rest:
        total = sum(len(p.chunks) for _, p in rest)
        if total <= smallest or len(rest) == 1:
            parts.append(rest)
            break
        cut, size = 0, 0
        while cut < len(rest) - 1 and size < total / 2:
            size += len(rest[cut][1].chunks)
            cut += 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    return parts


@dataclass(frozen=True, slots=True)
class _Planned:
    write: NewDocument | None
    """None: the stored version is current, nothing to write."""
    current: Document | None
    hidden: bool = False
    """The key holds a document outside the writer's access tags: refused, nothing written."""


def _hidden(prepared: PreparedDocument) -> IngestOutcome:
    # Worded for the key, not the document: the writer learns the key is taken, nothing else.
    reason = (
        f"the key {prepared.key!r} holds a document without this API key's access tags; "
        "it can be replaced only by a key that can see it"
    )
    return IngestOutcome(prepared.label, FAILED, reason=reason, code=AccessTagRequired.code)
