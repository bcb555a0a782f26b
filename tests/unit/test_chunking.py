from __future__ import annotations

import pytest

from agent.chunking import chunk_text


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("Hello world.", max_chars=200, overlap_chars=20) == ["Hello world."]


def test_paragraphs_are_packed_up_to_the_budget() -> None:
    paras = [f"Paragraph {i} " + "word " * 30 for i in range(10)]
    chunks = chunk_text("\n\n".join(paras), max_chars=400, overlap_chars=50)
    assert len(chunks) > 1
    assert all(len(c) <= 400 for c in chunks)
    for i in range(10):
        assert any(f"Paragraph {i} " in c for c in chunks)


def test_headings_start_a_new_chunk() -> None:
    text = "# One\n\nAlpha text.\n\n# Two\n\nBeta text."
    chunks = chunk_text(text, max_chars=1000, overlap_chars=50)
    assert chunks == ["# One\n\nAlpha text.", "# Two\n\nBeta text."]


def test_long_paragraph_is_cut_at_sentences_and_words_and_overlaps() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = chunk_text(text, max_chars=300, overlap_chars=60)
    assert all(len(c) <= 300 for c in chunks)
    # Every sentence survives whole in some chunk.
    for i in range(200):
        assert any(f"Sentence number {i} is here." in c for c in chunks)
    # Consecutive chunks share text (the overlap).
    assert chunks[1].split()[0] in chunks[0]


def test_unbreakable_token_is_cut_hard() -> None:
    chunks = chunk_text("x" * 1000, max_chars=300, overlap_chars=0)
    assert "".join(chunks) == "x" * 1000


def test_overlap_must_be_smaller_than_budget() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a", max_chars=100, overlap_chars=100)
