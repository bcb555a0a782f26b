"""Reading documents: format detection, HTML structure, PDF text, and clear refusals."""

from __future__ import annotations

import pytest

from agent.formats import DocumentFormat, UnreadableDocument, detect, parse_bytes, parse_text
from tests.pdfs import minimal_pdf


def test_detection_trusts_the_content_signature_before_the_name() -> None:
    assert detect("scan.txt", b"%PDF-1.7\n") is DocumentFormat.PDF
    assert detect("notes.MD", b"# hi") is DocumentFormat.MARKDOWN
    assert detect("page.htm", b"<p>") is DocumentFormat.HTML
    assert detect("page", b"  <!DOCTYPE html><html>") is DocumentFormat.HTML
    assert detect("README", b"plain words") is DocumentFormat.TEXT


def test_html_keeps_headings_and_paragraphs_and_drops_what_is_not_shown() -> None:
    page = """<!doctype html><html><head><title> Leave  policy </title>
        <style>p { color: red }</style><script>track()</script></head>
        <body><nav>Home</nav><h1>Leave</h1><p>We get <b>27</b>&nbsp;days.</p>
        <h2>Carry-over</h2><ul><li>Up to five days</li><li>Until March</li></ul>
        <pre>code  keeps
 its lines</pre></body></html>"""
    doc = parse_text(page, DocumentFormat.HTML)
    assert doc.title == "Leave policy"
    assert doc.text.split("\n\n") == [
        "Home",
        "# Leave",
        "We get 27 days.",  # &nbsp; is layout too
        "## Carry-over",
        "- Up to five days",
        "- Until March",
        "code  keeps\n its lines",
    ]
    untitled = parse_text("<h1>First heading</h1><p>x</p>", DocumentFormat.HTML)
    assert untitled.title == "First heading"


def test_pdf_text_and_title_come_out() -> None:
    doc = parse_bytes(
        minimal_pdf(["Part XK-4471-B costs 42 euros."], title="Prices"), DocumentFormat.PDF
    )
    assert doc.title == "Prices"
    assert "XK-4471-B costs 42 euros." in doc.text


@pytest.mark.parametrize(
    ("data", "fmt", "reason"),
    [
        (minimal_pdf(["some text"])[:150], DocumentFormat.PDF, "corrupt PDF"),
        (b"%PDF-1.4\n" + bytes(range(256)) * 4, DocumentFormat.PDF, "corrupt PDF"),
        (minimal_pdf([]), DocumentFormat.PDF, "the PDF has no extractable text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", DocumentFormat.TEXT, "binary file, not text"),
        (
            "Café".encode("latin-1"),
            DocumentFormat.TEXT,
            "not UTF-8 text (invalid byte at offset 3)",
        ),
        (b" \n\t\n", DocumentFormat.MARKDOWN, "empty file"),
        (b"<script>only()</script>", DocumentFormat.HTML, "the HTML has no visible text"),
    ],
)
def test_unreadable_input_says_why(data: bytes, fmt: DocumentFormat, reason: str) -> None:
    with pytest.raises(UnreadableDocument) as caught:
        parse_bytes(data, fmt)
    assert caught.value.reason.startswith(reason)


def test_markdown_title_skips_code_fences() -> None:
    doc = parse_text("```\n# comment\n```\n\n## Real title\n\nbody", DocumentFormat.MARKDOWN)
    assert doc.title == "Real title"
    assert parse_text("# not a title in plain text", DocumentFormat.TEXT).title is None
