"""Markdown parsed as CommonMark and normalised into the text the chunker reads."""

from __future__ import annotations

import pytest

from agent.chunking import chunk_document
from agent.formats import DocumentFormat, markdown_title, parse_text


def normalised(text: str) -> str:
    return parse_text(text, DocumentFormat.MARKDOWN).text


def headings_of(text: str) -> list[str]:
    chunks = chunk_document(normalised(text), max_tokens=200, overlap_tokens=0)
    return [c.heading for c in chunks]


def test_setext_headings_become_atx_headings_and_give_the_title() -> None:
    text = "Leave *policy*\n==============\n\nIntro.\n\nCarry-over\n----------\n\nFive days."
    doc = parse_text(text, DocumentFormat.MARKDOWN)
    assert doc.text == "# Leave *policy*\n\nIntro.\n\n## Carry-over\n\nFive days."
    assert doc.title == "Leave policy"  # the heading's words, without emphasis marks
    assert headings_of(text) == ["Leave *policy*", "Leave *policy* > Carry-over"]


def test_a_multi_line_setext_heading_is_one_line() -> None:
    assert normalised("Annual\nleave\n===\n\nx") == "# Annual leave\n\nx"


@pytest.mark.parametrize(
    "text",
    [
        "# Title\n\n```\n# comment\n```\n",
        "# Title\n\n~~~sh\n# comment\n~~~\n",
        "# Title\n\n    # indented code\n",
        "# Title\n\n- item\n\n  # heading in a list item\n",
        "# Title\n\n> # heading in a quote\n",
        "# Title\n\n<div>\n# in an HTML block\n</div>\n",
        "---\ntitle: Front\n# a YAML comment\n---\n# Title\n\nx\n",
    ],
)
def test_hash_lines_inside_other_blocks_are_never_headings(text: str) -> None:
    doc = parse_text(text, DocumentFormat.MARKDOWN)
    assert doc.title == "Title"
    assert {h for h in headings_of(text) if h} == {"Title"}


def test_code_stays_code_and_other_lines_stay_as_written() -> None:
    text = (
        "Intro with  two spaces and a [link][ref].\n\n"
        "    indented code\n\n    after a blank line\n\n"
        "````md\n```\n# not a heading\n```\n````\n\n"
        "- item\n\n  # nested\n\n"
        "[ref]: https://example.test\n"
    )
    assert normalised(text).split("\n") == [
        "Intro with  two spaces and a [link][ref].",
        "",
        "```",  # indented code is fenced, so its blank line stays inside it
        "indented code",
        "",
        "after a blank line",
        "```",
        "",
        "````md",  # a fence longer than any run inside, so the inner ``` cannot close it
        "```",
        "# not a heading",
        "```",
        "````",
        "",
        "- item",
        "",
        "    # nested",  # indented out of the chunker's heading rule; its words stay
        "",
        "[ref]: https://example.test",
        "",
    ]


def test_headings_keep_a_trailing_hash() -> None:
    text = "C#\n==\n\n## F# ##\n\nx"
    assert normalised(text) == "# C#\n\n## F#\n\nx"
    assert headings_of(text) == ["C# > F#"]
    assert normalised("Ends with #\n===\n\nx") == "# Ends with # #\n\nx"
    assert headings_of("Ends with #\n===\n\nx") == ["Ends with #"]


def test_an_inline_code_line_is_not_a_fence() -> None:
    text = "# A\n\n```x``` is inline code\n\n# B\n\nbody"
    assert normalised(text) == text
    assert headings_of(text) == ["A", "B"]


def test_normalising_twice_changes_nothing() -> None:
    text = (
        "---\nk: v\n# c\n---\nTitle\n=====\n\n    code\n\n- a\n\n  # b\n\n<div>\n# c\n</div>\n\n"
        "```py\nx = 1\n```\n\n## End #\n"
    )
    once = normalised(text)
    assert normalised(once) == once


def test_windows_line_endings_are_read() -> None:
    assert normalised("Title\r\n=====\r\n\r\nx") == "# Title\n\nx"


def test_title_is_the_first_top_level_heading() -> None:
    assert markdown_title("- # listed\n\nPlain\n\n## Second") == "Second"
    assert markdown_title("no headings at all") is None
