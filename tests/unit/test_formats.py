"""Reading documents: format detection, HTML structure, PDF text, and clear refusals."""

from __future__ import annotations

import pytest

from agent.formats import (
    MAX_DOCUMENT_BYTES,
    DocumentFormat,
    UnreadableDocument,
    detect,
    parse_bytes,
    parse_document,
    parse_text,
)
from agent.formats.html_nesting import MAX_NESTING, nesting_estimate
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
        "```\ncode  keeps\n its lines\n```",  # fenced: the chunker never reads it as structure
    ]
    untitled = parse_text("<h1>First heading</h1><p>x</p>", DocumentFormat.HTML)
    assert untitled.title == "First heading"


@pytest.mark.parametrize(
    ("page", "blocks"),
    [
        # Unclosed <p> and <li> end where a browser ends them.
        ("<p>one<p>two<div>three</div>four", ["one", "two", "three", "four"]),
        ("<ul><li>a<li>b<ul><li>c</ul><li>d</ul>", ["- a", "- b", "- c", "- d"]),
        # Stray end tags are ignored, and text after </html> is still the page's.
        ("</div></p><p>hello</span> world</p></body></html><p>after</p>", ["hello world", "after"]),
        # Misnested formatting and a table missing its end tags.
        ("<b><p>x</b>y</p><table><tr><td>a<td>b</table>c", ["xy", "a", "b", "c"]),
        # A <p> inside a heading (HTML5 keeps it there) opens a paragraph after the heading.
        ("<h2>Title<p>para</h2>rest", ["## Title", "para", "rest"]),
        # An unclosed <script> or comment hides what follows, as in a browser.
        ("<p>x</p><script>var a = '</p>'", ["x"]),
        ("<p>a</p><!-- never closed <p>b</p>", ["a"]),
        # Hundreds of unclosed inline tags (old editors wrote them) lose nothing.
        ("<font size=2>w " * 300 + "<p>END", ["w " * 299 + "w", "END"]),
    ],
)
def test_malformed_html_reads_as_a_browser_shows_it(page: str, blocks: list[str]) -> None:
    assert parse_text(page, DocumentFormat.HTML).text.split("\n\n") == blocks


def test_html_text_that_looks_like_markdown_stays_text() -> None:
    page = "<h1>C#</h1><p># not a heading</p><p>```</p><p>&lt;script&gt; tags</p><p>x</p>"
    doc = parse_text(page, DocumentFormat.HTML)
    assert doc.text.split("\n\n") == [
        "# C#",
        "\\# not a heading",
        "\\```",
        "\\<script> tags",
        "x",
    ]
    # Read back as Markdown (as ingestion does), the outline is the one heading.
    assert parse_text(doc.text, DocumentFormat.MARKDOWN).text == doc.text


def test_html_title_skips_svg_titles_and_falls_back_to_the_first_h1() -> None:
    page = "<body><svg><title>icon</title></svg><h2>Sub</h2><h1>Main</h1><p>x</p></body>"
    assert parse_text(page, DocumentFormat.HTML).title == "Main"
    assert parse_text(f"<title>Page</title>{page}", DocumentFormat.HTML).title == "Page"


def test_the_tree_is_walked_without_recursion() -> None:
    # Deeper than Python's default recursion limit (1000), within the nesting limit.
    depth = MAX_NESTING - 4
    page = "<span>" * depth + "deep" + "</span>" * depth
    assert parse_text(page, DocumentFormat.HTML).text == "deep"


def test_html_nesting_past_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(UnreadableDocument) as caught:
        parse_text("<div>" * (MAX_NESTING + 1) + "x", DocumentFormat.HTML)
    assert caught.value.reason == f"the HTML nests elements more than {MAX_NESTING} deep"


@pytest.mark.parametrize(
    ("markup", "depth"),
    [
        ("<div><div>x</div></div><div>y</div>", 2),
        ("<p>a<p>b<li>c<li>d<br><img src=x>", 0),  # closed by siblings, or void
        ("<svg>" + "<path d='m0 0'/>" * 2000 + "</svg>", 1),  # self-closed in SVG
        ("<div/>" * 3, 3),  # but not in HTML
        ("<script>for (i = 0; i<n; i++) s += '<div>'</script><style>a<b{}</style>", 0),
        ("<!-- <div><div> -->", 0),
        ("</div></div><div>", 1),  # stray end tags close nothing
        ("<ruby>a<rt>x<rp>(</ruby>" * 5, 3),  # <ruby> closes its parts
        ("<rt>" * 5, 5),  # outside one, they nest
        ("<span><div></span>" * 3, 4),  # low (a browser keeps the spans open), but grows
    ],
)
def test_nesting_is_estimated_in_one_scan(markup: str, depth: int) -> None:
    assert nesting_estimate(markup) == depth


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


def test_documents_are_read_by_signature_within_the_size_limit() -> None:
    pdf = minimal_pdf(["Signed and sealed."], title="Deed")
    doc = parse_document(pdf, name="upload.bin")
    assert (doc.format, doc.title, doc.text_format) == (
        DocumentFormat.PDF,
        "Deed",
        DocumentFormat.TEXT,
    )
    page = parse_document(b"<!doctype html><h1>Hi</h1><p>there</p>")
    assert (page.format, page.text_format) == (DocumentFormat.HTML, DocumentFormat.MARKDOWN)
    assert parse_document(b"Hi\n==\n", name="notes.md").text == "# Hi\n"
    assert parse_document(b"# Hi", DocumentFormat.TEXT).format is DocumentFormat.TEXT
    with pytest.raises(UnreadableDocument, match="empty file"):
        parse_document(b" \n ")
    with pytest.raises(UnreadableDocument, match=r"file is too large \(20\.0 MiB; the limit is"):
        parse_document(b"x" * (MAX_DOCUMENT_BYTES + 1))


def test_markdown_title_skips_code_fences() -> None:
    doc = parse_text("```\n# comment\n```\n\n## Real title\n\nbody", DocumentFormat.MARKDOWN)
    assert doc.title == "Real title"
    assert parse_text("# not a title in plain text", DocumentFormat.TEXT).title is None
