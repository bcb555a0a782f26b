"""HTML to the chunker's structured text: headings become ATX headings, blocks paragraphs.

Parsed by selectolax on Lexbor, a C implementation of the WHATWG HTML5 parsing algorithm: a
malformed page (unclosed `<p>` and `<li>`, stray end tags, misnested formatting, text after
`</html>`) becomes the tree a browser builds, so what is indexed is what a reader saw. lxml was
the alternative and is as fast, but libxml2's HTML parser predates HTML5: tried on such pages it
dropped the text after `</html>` and, silently, everything past 256 open elements (300 unclosed
`<font>` tags lost the page's end). Lexbor's one weakness, time quadratic in nesting depth, is
refused up front by `agent.formats.html_nesting`.

Scripts, styles and other invisible elements are dropped; `<pre>` becomes fenced code, keeping
its lines; the `<title>` (else the first `<h1>`) is the document's title. The tree is walked
without recursion, since inline elements may nest as deep as the page likes.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from agent.formats import DocumentFormat, ParsedDocument, UnreadableDocument, clean_title
from agent.formats.html_nesting import MAX_NESTING, nesting_estimate
from agent.formats.markdown import atx_heading, fenced_code, literal_paragraph

_INVISIBLE = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "head", "iframe", "title"}
)
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "center", "dd", "details",
        "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
        "header", "hgroup", "hr", "legend", "li", "main", "menu", "nav", "ol", "p", "pre",
        "section", "summary", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACE = re.compile(r"\s+")


def parse_html(markup: str) -> ParsedDocument:
    if nesting_estimate(markup) > MAX_NESTING:
        raise UnreadableDocument(f"the HTML nests elements more than {MAX_NESTING} deep")
    tree = LexborHTMLParser(markup)
    renderer = _Renderer()
    if tree.root is not None:
        renderer.render(tree.root)
    title = clean_title(_title(tree)) or clean_title(renderer.first_h1)
    return ParsedDocument(DocumentFormat.HTML, "\n\n".join(renderer.blocks), title)


def _title(tree: LexborHTMLParser) -> str | None:
    """The first `<title>` outside SVG and MathML (an icon's `<title>` names the icon)."""
    for node in tree.css("title"):
        parent = node.parent
        while parent is not None and parent.tag not in ("svg", "math"):
            parent = parent.parent
        if parent is None:
            return node.text()
    return None


class _Renderer:
    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.first_h1 = ""
        self._words: list[str] = []
        self._heading = 0  # the level of the heading being read, 0 outside headings
        self._pre = 0  # depth inside <pre>

    def render(self, root: LexborNode) -> None:
        """Depth first, entering and leaving each element, with the tree's links as the stack."""
        node: LexborNode | None = root
        while node is not None:
            if self._enter(node) and node.child is not None:
                node = node.child
                continue
            while node is not None:
                self._leave(node)
                if node.mem_id == root.mem_id:  # each access makes a new Python object
                    node = None
                elif node.next is not None:
                    node = node.next
                    break
                else:
                    node = node.parent
        self._end_block()

    def _enter(self, node: LexborNode) -> bool:
        """Take in `node`; whether its children are to be read."""
        if node.is_text_node:
            text = node.text_content or ""
            # Preformatted text keeps its lines; everywhere else whitespace is layout only.
            self._words.append(text if self._pre else _SPACE.sub(" ", text))
            return False
        tag = node.tag or ""
        if not node.is_element_node or tag in _INVISIBLE:
            return False
        if tag in _HEADINGS:
            self._end_block()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCKS:
            self._end_block()
            if tag == "pre":
                self._pre += 1
            elif tag == "li":
                self._words.append("- ")
        return True

    def _leave(self, node: LexborNode) -> None:
        tag = node.tag or ""
        if node.is_element_node and (tag in _HEADINGS or tag in _BLOCKS):
            self._end_block()  # before leaving <pre>, so its text keeps its lines
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def _end_block(self) -> None:
        raw = "".join(self._words)
        self._words = []
        heading, self._heading = self._heading, 0
        if self._pre:
            if raw.strip():
                self.blocks.append("\n".join(fenced_code(raw.strip("\n").split("\n"))))
            return
        text = " ".join(raw.split())
        if not text or text == "-":
            return
        if heading:
            self.first_h1 = self.first_h1 or (text if heading == 1 else "")
            self.blocks.append(atx_heading(heading, text))
        else:
            self.blocks.append(literal_paragraph(text))
