"""HTML to text with its structure: headings become Markdown headings, blocks become paragraphs.

The standard library's tolerant `html.parser` is enough here: documents are read for their words
and outline, never rendered, and it needs no compiled dependency. Scripts, styles and other
invisible elements are dropped; the `<title>` (else the first `<h1>`) is the document's title.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from agent.formats import DocumentFormat, ParsedDocument, clean_title

_INVISIBLE = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe"})
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
        "figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
        "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACE = re.compile(r"\s+")


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title = ""
        self.first_h1 = ""
        self._words: list[str] = []
        self._hidden = 0  # depth inside invisible elements
        self._in_title = False
        self._heading = 0  # level of the heading being read, 0 outside headings
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _INVISIBLE:
            self._hidden += 1
        elif tag in _HEADINGS:
            self._end_block()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCKS:
            self._end_block()
            if tag == "pre":
                self._pre += 1
            elif tag == "li":
                self._words.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _INVISIBLE:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _HEADINGS or tag in _BLOCKS:
            self._end_block()  # before leaving <pre>, so its text keeps its lines
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._hidden:
            # Preformatted text keeps its lines; everywhere else whitespace is layout only.
            self._words.append(data if self._pre else _SPACE.sub(" ", data))

    def _end_block(self) -> None:
        text = "".join(self._words)
        text = text.strip("\n") if self._pre else " ".join(text.split())
        self._words = []
        if text.strip() and text.strip() != "-":
            if self._heading:
                self.first_h1 = self.first_h1 or (text if self._heading == 1 else "")
                text = f"{'#' * self._heading} {text}"
            self.blocks.append(text)
        self._heading = 0

    def close(self) -> None:
        super().close()
        self._end_block()


def parse_html(markup: str) -> ParsedDocument:
    extractor = _Extractor()
    extractor.feed(markup)
    extractor.close()
    title = clean_title(extractor.title) or clean_title(extractor.first_h1)
    return ParsedDocument(DocumentFormat.HTML, "\n\n".join(extractor.blocks), title)
