"""Markdown to the chunker's structured text, parsed as CommonMark by markdown-it-py.

The chunker (`agent.chunking`) reads a small dialect: ATX `#` lines open sections, fenced code
is never structure. Markdown as people write it says more, and a line-by-line reading misses
setext headings and mistakes a `#` line in a list item or an HTML block for a heading. So the
document is parsed here, and only what the chunker would misread is rewritten, using the token
line maps; every other line is kept as written:

- a top-level heading, ATX or setext, becomes one ATX line; the first is the document's title;
- top-level code, fenced or indented, becomes fenced code under a fence no line inside can close;
- any other line the chunker would take for a heading or a fence (inside a list item, a block
  quote, an HTML block, YAML front matter) is indented four spaces: its words stay, and to the
  chunker it is text. A heading nested in a list or a quote is content, not the outline.

The output is a fixed point: normalising it again changes nothing, so text that went through
here once (HTML rendered by `agent.formats.html`, a document stored before) can come back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

from agent.chunking import is_structure
from agent.formats import DocumentFormat, ParsedDocument, clean_title

# Plain CommonMark: its grammar is the one a heading or a code block is judged by. Parsing keeps
# no state in the instance, so one is shared.
_PARSER = MarkdownIt("commonmark")
_NEWLINE = re.compile(r"\r\n?")
_FRONT_MATTER_FENCE = "---"
_FRONT_MATTER_ENDS = ("---", "...")
_CLOSING_HASHES = re.compile(r"[ \t]#+$")
# What would open a block other than a paragraph at the start of a line of text: a heading, a
# fence, or an HTML block that runs past blank lines (script, pre, style, textarea, comment...).
_BLOCK_OPENER = re.compile(
    r"#{1,6}(?:[ \t]|$)|`{3}|~{3}|<(?:script|pre|style|textarea|[!?])", re.IGNORECASE
)
_TEXT_CHILDREN = frozenset({"text", "code_inline"})
_BREAKS = frozenset({"softbreak", "hardbreak"})


def parse_markdown(text: str) -> ParsedDocument:
    lines = _NEWLINE.sub("\n", text).split("\n")
    start = _front_matter_end(lines)
    out = [_as_text(line) for line in lines[:start]]
    title: str | None = None
    tokens = _PARSER.parse("\n".join(lines[start:]))
    cursor = start  # the first line not yet written out
    for i, token in enumerate(tokens):
        if token.level != 0 or token.map is None:
            continue  # inside a block, or a closing token: its block is written whole
        first, end = token.map[0] + start, token.map[1] + start
        # Between blocks: blank lines and link reference definitions, which make no token.
        out.extend(_as_text(line) for line in lines[cursor:first])
        heading = _heading_text(tokens[i + 1]) if token.type == "heading_open" else ""
        if heading:
            out.append(atx_heading(int(token.tag[1]), heading))
            title = title or clean_title(_plain(tokens[i + 1]))
        elif token.type in ("fence", "code_block"):
            info = token.info.strip() if token.type == "fence" else ""
            code = token.content.split("\n")
            out.extend(fenced_code(code[:-1] if code[-1] == "" else code, info))
        else:
            out.extend(_as_text(line) for line in lines[first:end])
        cursor = end
    out.extend(_as_text(line) for line in lines[cursor:])
    return ParsedDocument(DocumentFormat.MARKDOWN, "\n".join(out), title)


def _front_matter_end(lines: Sequence[str]) -> int:
    """The number of lines of YAML front matter (`---` ... `---`) the document opens with.

    Front matter is not Markdown: read as Markdown, its last key would be a setext heading.
    """
    if not lines or lines[0].rstrip() != _FRONT_MATTER_FENCE:
        return 0
    for number, line in enumerate(lines[1:], 2):
        if line.rstrip() in _FRONT_MATTER_ENDS:
            return number
    return 0


def _as_text(line: str) -> str:
    """`line` as written, unless the chunker would read it as structure: then indented out."""
    return f"    {line.lstrip(' ')}" if is_structure(line) else line


def _heading_text(inline: Token) -> str:
    # A setext heading's content may span lines; an ATX line holds it on one.
    return " ".join(part.strip() for part in inline.content.split("\n"))


def _plain(inline: Token) -> str:
    """The heading's words without Markdown syntax (emphasis marks, link targets)."""
    parts = []
    for child in inline.children or ():
        if child.type in _TEXT_CHILDREN:
            parts.append(child.content)
        elif child.type in _BREAKS:
            parts.append(" ")
    return "".join(parts)


# -- writing the chunker's structured text (shared with agent.formats.html) ----------------------


def atx_heading(level: int, text: str) -> str:
    # A '#' run ending the text would read as an ATX closing sequence: close it for real instead.
    return f"{'#' * level} {text} #" if _CLOSING_HASHES.search(text) else f"{'#' * level} {text}"


def fenced_code(lines: Sequence[str], info: str = "") -> list[str]:
    """Code as fenced code under a fence longer than any fence-like run inside it."""
    char = "~" if "`" in info else "`"  # a backtick fence's info string cannot hold a backtick
    runs = (len(line) - len(line.lstrip(char)) for line in (b.lstrip(" ") for b in lines))
    fence = char * max(3, max(runs, default=0) + 1)
    return [f"{fence}{info}", *lines, fence]


def literal_paragraph(text: str) -> str:
    """One line of text that Markdown reads as a paragraph, whatever it starts with."""
    return f"\\{text}" if _BLOCK_OPENER.match(text) else text
