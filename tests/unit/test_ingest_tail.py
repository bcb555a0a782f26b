"""The last group of an ingestion goes in parts of halving size, whole documents each."""

from __future__ import annotations

from agent.formats import DocumentFormat
from agent.services.document_input import DocumentInput, PreparedDocument, prepare
from agent.services.ingest import tail_parts
from agent.settings import AgentSettings


def doc(i: int, chunks: int) -> tuple[int, PreparedDocument]:
    text = "\n\n".join(f"## Part {j}\n\nSection {j} of document {i}." for j in range(chunks))
    given = DocumentInput(text, format=DocumentFormat.MARKDOWN, key=f"d{i}")
    prepared = prepare(f"d{i}", given, AgentSettings())
    assert len(prepared.chunks) == chunks
    return i, prepared


def sizes(parts: list[list[tuple[int, PreparedDocument]]]) -> list[int]:
    return [sum(len(p.chunks) for _, p in part) for part in parts]


def test_a_full_last_group_halves_down_to_the_smallest_part() -> None:
    group = [doc(i, 2) for i in range(128)]  # 256 chunks
    parts = tail_parts(group, 16)
    assert sizes(parts) == [128, 64, 32, 16, 16]
    assert [e for part in parts for e in part] == group  # every document once, in order


def test_documents_are_never_split_and_a_small_group_stays_whole() -> None:
    group = [doc(0, 40), doc(1, 3), doc(2, 3)]
    assert sizes(tail_parts(group, 16)) == [40, 6]
    assert sizes(tail_parts([doc(0, 30)], 16)) == [30]
    assert sizes(tail_parts([doc(0, 5), doc(1, 5)], 16)) == [10]
    assert tail_parts([], 16) == []
