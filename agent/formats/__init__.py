"""Turning a document's bytes into (title, text) the chunker understands, per format.

Each format has its parser: Markdown is parsed as CommonMark (`agent.formats.markdown`), HTML by
an HTML5 parser (`agent.formats.html`), PDF by pypdf (`agent.formats.pdf`); Markdown and HTML
come out as the chunker's structured text (ATX headings, fenced code), PDF as paragraphs, plain
text as it is. Anything that cannot be read as a document raises `UnreadableDocument` with a
reason a person can act on. Where the bytes come from (a file, an API request) is the caller's
business; how large a document may be is decided here, once, for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.errors import CallerError

MAX_TITLE_CHARS = 300
MAX_DOCUMENT_BYTES = 20 * 2**20
"""The largest document read, in any format: the CLI's files and the API's uploads alike."""
SNIFF_BYTES = 64
"""How much of the start of a document `detect` needs to see."""


class DocumentFormat(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"


SUFFIXES = {
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
    ".html": DocumentFormat.HTML,
    ".htm": DocumentFormat.HTML,
    ".pdf": DocumentFormat.PDF,
}


class UnreadableDocument(CallerError):
    """The input is not a document Garrison can read; `reason` says why, for people."""

    code = "unreadable_document"

    @property
    def reason(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    format: DocumentFormat
    """The format the document was read as."""
    text: str
    title: str | None
    """The title the content itself declares (first heading, <title>, PDF metadata), if any."""

    @property
    def text_format(self) -> DocumentFormat:
        """How `text` reads now: Markdown for what came out structured, else plain text."""
        structured = (DocumentFormat.MARKDOWN, DocumentFormat.HTML)
        return DocumentFormat.MARKDOWN if self.format in structured else DocumentFormat.TEXT


def detect(name: str, head: bytes) -> DocumentFormat:
    """The format by content signature first (a PDF named .txt is still a PDF), then suffix."""
    if head.startswith(b"%PDF-"):
        return DocumentFormat.PDF
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    found = SUFFIXES.get(suffix)
    if found is not None:
        return found
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return DocumentFormat.HTML
    return DocumentFormat.TEXT


def parse_document(
    data: bytes, fmt: DocumentFormat | None = None, name: str = ""
) -> ParsedDocument:
    """A document's bytes read as `fmt`, or as the format `detect` finds (`name` may help)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UnreadableDocument(too_large(len(data)))
    if not data.strip():
        raise UnreadableDocument("empty file")
    return parse_bytes(data, fmt or detect(name, data[:SNIFF_BYTES]))


def too_large(size: int) -> str:
    limit = MAX_DOCUMENT_BYTES // 2**20
    return f"file is too large ({size / 2**20:.1f} MiB; the limit is {limit} MiB)"


def parse_bytes(data: bytes, fmt: DocumentFormat) -> ParsedDocument:
    if fmt is DocumentFormat.PDF:
        from agent.formats.pdf import parse_pdf  # pypdf is imported only when a PDF comes

        return _require_text(parse_pdf(data), "the PDF has no extractable text (scanned images?)")
    # NUL never occurs in text; checked first because NUL-laden binaries can be valid UTF-8.
    if b"\x00" in data:
        raise UnreadableDocument("binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    return parse_text(text, fmt)


def parse_text(text: str, fmt: DocumentFormat) -> ParsedDocument:
    if not text.strip():
        raise UnreadableDocument("empty file")
    if fmt is DocumentFormat.HTML:
        from agent.formats.html import parse_html

        return _require_text(parse_html(text), "the HTML has no visible text")
    if fmt is DocumentFormat.PDF:
        raise UnreadableDocument("PDF content must be given as bytes")
    if fmt is DocumentFormat.MARKDOWN:
        from agent.formats.markdown import parse_markdown

        return parse_markdown(text)
    return ParsedDocument(fmt, text, None)


def markdown_title(text: str) -> str | None:
    """The Markdown document's first top-level heading (ATX or setext), outside code."""
    from agent.formats.markdown import parse_markdown

    return parse_markdown(text).title


def clean_title(value: str | None) -> str | None:
    title = " ".join((value or "").split())[:MAX_TITLE_CHARS]
    return title or None


def _require_text(doc: ParsedDocument, reason: str) -> ParsedDocument:
    if not doc.text.strip():
        raise UnreadableDocument(reason)
    return doc
