"""Turning a document's bytes into (title, text) the chunker understands, per format.

Plain text and Markdown pass through (Markdown headings are the structure the chunker follows);
HTML and PDF are parsed by `agent.formats.html` and `agent.formats.pdf`, HTML headings rendered
as Markdown headings so structure survives. Anything that cannot be read as a document raises
`UnreadableDocument` with a reason a person can act on; reading files from disk (and their size
limit) is the caller's business, not this package's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from agent.errors import CallerError

MAX_TITLE_CHARS = 300
_MD_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")


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
    text: str
    title: str | None
    """The title the content itself declares (first heading, <title>, PDF metadata), if any."""


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
    title = markdown_title(text) if fmt is DocumentFormat.MARKDOWN else None
    return ParsedDocument(fmt, text, title)


def markdown_title(text: str) -> str | None:
    """The first Markdown heading outside code fences."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced  # a '# comment' in a code block is not a heading
        elif not fenced and (match := _MD_HEADING.match(line)):
            return clean_title(match.group(1))
    return None


def clean_title(value: str | None) -> str | None:
    title = " ".join((value or "").split())[:MAX_TITLE_CHARS]
    return title or None


def _require_text(doc: ParsedDocument, reason: str) -> ParsedDocument:
    if not doc.text.strip():
        raise UnreadableDocument(reason)
    return doc
