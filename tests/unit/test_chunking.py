"""Structure-aware chunking: sections by heading, paragraphs packed to a token budget, overlap."""

from __future__ import annotations

import itertools

import pytest

from agent.chunking import Chunk, chunk_document, count_tokens


def chunks_of(text: str, max_tokens: int = 200, overlap: int = 20) -> list[Chunk]:
    return chunk_document(text, max_tokens=max_tokens, overlap_tokens=overlap)


def test_short_text_is_one_chunk() -> None:
    assert chunks_of("Hello world.") == [Chunk("Hello world.", "", 3)]


def test_tokens_are_words_and_marks_with_long_words_counting_more() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("internationalisation") == 4  # 20 characters: one per six, rounded up
    assert count_tokens("XK-4471-B") == 5


def test_paragraphs_are_packed_up_to_the_budget() -> None:
    paras = [f"Paragraph {i} " + "word " * 30 for i in range(10)]
    chunks = chunks_of("\n\n".join(paras), max_tokens=80, overlap=0)
    assert len(chunks) == 5  # two 32-token paragraphs fit in 80, a third does not
    assert all(c.tokens <= 80 and c.tokens == count_tokens(c.text) for c in chunks)
    assert all(c.text.count("Paragraph") == 2 for c in chunks)
    assert "\n\n" in chunks[0].text  # paragraph breaks survive inside a chunk


def test_headings_open_sections_with_their_path() -> None:
    text = (
        "# Handbook\n\n## Leave\n\nAlpha text.\n\n### Carry-over\n\nBeta text.\n\n"
        "```\n# not a heading\n\nstill code\n```\n\n## Pay\n\nGamma text."
    )
    chunks = chunks_of(text)
    # "# Handbook" alone holds nothing: it lives on in the paths below it.
    assert [c.heading for c in chunks] == [
        "Handbook > Leave",
        "Handbook > Leave > Carry-over",
        "Handbook > Pay",
    ]
    assert chunks[0].text == "## Leave\n\nAlpha text."
    assert "# not a heading\n\nstill code" in chunks[1].text  # code fences are not structure
    assert chunks[2].text == "## Pay\n\nGamma text."


def test_a_fence_closes_only_with_its_own_kind_and_length() -> None:
    text = (
        "# A\n\n````\n```\n# inside\n```\n````\n\n## C# ##\n\nbody\n\n"
        "```x``` is inline code, not a fence\n\n# B\n\n~~~\n```\n# inside\n~~~\n\nend"
    )
    assert [c.heading for c in chunks_of(text)] == ["A", "A > C#", "B"]


def test_no_chunk_spans_two_sections_even_when_both_are_small() -> None:
    chunks = chunks_of("# One\n\nAlpha.\n\n# Two\n\nBeta.", max_tokens=1000)
    assert [c.text for c in chunks] == ["# One\n\nAlpha.", "# Two\n\nBeta."]


def test_long_paragraph_is_cut_at_sentences_and_overlaps() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = chunks_of(text, max_tokens=60, overlap=14)
    assert all(c.tokens <= 60 for c in chunks)
    for i in range(200):  # every sentence survives whole in some chunk
        assert any(f"Sentence number {i} is here." in c.text for c in chunks)
    for before, after in itertools.pairwise(chunks):
        # The overlap is the trailing whole sentences of the chunk before: at 7 tokens each, two.
        tail = ". ".join(before.text.split(". ")[-2:])
        assert after.text.startswith(tail)
        assert count_tokens(tail) == 14


def test_sentence_over_budget_is_cut_at_words_and_words_hard() -> None:
    long_sentence = "word " * 100
    chunks = chunks_of(long_sentence, max_tokens=40, overlap=0)
    assert all(c.tokens <= 40 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == long_sentence.split()
    hard = chunks_of("x" * 1000, max_tokens=10, overlap=0)
    assert "".join(c.text for c in hard) == "x" * 1000
    assert all(c.tokens <= 10 for c in hard)


def test_overlap_must_leave_room_for_new_text() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_document("a", max_tokens=100, overlap_tokens=50)
