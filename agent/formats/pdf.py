"""PDF to text with pypdf (pure Python, maintained, no system libraries).

Each page's text becomes a run of paragraphs; PDFs carry no reliable heading structure, so the
chunker packs them by paragraph and sentence. The title comes from the document's metadata.
A PDF is untrusted input to a large parser: anything it raises is reported as a corrupt file
rather than allowed to abort the batch, and very long documents are refused by page count.
"""

from __future__ import annotations

import io
import logging
import re

from agent.formats import DocumentFormat, ParsedDocument, UnreadableDocument, clean_title

MAX_PAGES = 2000
_BLANK_LINES = re.compile(r"\n\s*\n")


def parse_pdf(data: bytes) -> ParsedDocument:
    # Imported here so a process that never sees a PDF never pays for pypdf's import.
    from pypdf import PdfReader

    # pypdf logs every recoverable oddity of a malformed file as a warning; what matters to the
    # operator is only whether text came out, which the caller reports.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("the PDF is encrypted")
        if len(reader.pages) > MAX_PAGES:
            raise UnreadableDocument(f"the PDF has more than {MAX_PAGES} pages")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except UnreadableDocument:
        raise
    except Exception as exc:  # any parser failure on a malformed file means "corrupt"
        raise UnreadableDocument(f"corrupt PDF ({type(exc).__name__}: {exc})"[:300]) from None
    paragraphs = [
        " ".join(p.split()) for page in pages for p in _BLANK_LINES.split(page) if p.strip()
    ]
    return ParsedDocument(DocumentFormat.PDF, "\n\n".join(paragraphs), clean_title(meta_title))
