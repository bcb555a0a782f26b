"""Splitting a document's text into chunks that follow its structure, within a token budget.

The input is structured text: ATX `#` headings open sections, fenced code is never structure,
blank lines (outside code) separate paragraphs. Documents reach this module normalised by
`agent.formats`, which parses Markdown (CommonMark) and HTML with real parsers and renders them
in exactly this form: setext headings are ATX lines there, indented code is fenced, and a line
that only looks like a heading or a fence (inside a list item, an HTML block) is indented out of
these rules. So the line rules below are complete for what they are given, and plain text is
read by the same rules. A chunk never spans two sections and carries its section's heading path
("Policy > Annual leave"). Inside a section, paragraphs are
packed up to the budget; a paragraph over budget is cut at sentences, then at words, and a
"word" longer than the budget (a URL, base64) is cut hard. Consecutive chunks of one section share
an overlap of whole trailing sentences, so a passage cut at a boundary is still found whole.

Tokens are estimated, not counted with the embedding model's tokenizer (which lives in the
engine's environment, not here): a word is one token per six characters, rounded up, and each
punctuation mark is one. That tracks word-piece counts of ordinary prose closely and errs high on
odd strings, which is the safe side for a model that truncates its input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# CommonMark's ATX heading: a closing run of '#' counts only after a space, so "C#" stays whole.
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
CHARS_PER_TOKEN = 6


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    heading: str
    """The heading path of the section the chunk lies in; empty before the first heading."""
    tokens: int
    """The estimated token count, never above the budget the chunk was cut for."""


def count_tokens(text: str) -> int:
    """Estimated tokens of `text` (see the module docstring)."""
    return sum(-(-len(t) // CHARS_PER_TOKEN) for t in _TOKEN.findall(text))


def chunk_document(text: str, *, max_tokens: int, overlap_tokens: int) -> list[Chunk]:
    # The overlap is taken from the budget, so it must leave room for new text in every chunk.
    if not 0 <= overlap_tokens < max_tokens // 2:
        raise ValueError("overlap_tokens must be at least 0 and less than half of max_tokens")
    chunks: list[Chunk] = []
    for heading, blocks in _sections(text.replace("\r\n", "\n")):
        chunks.extend(_pack(blocks, heading, max_tokens, overlap_tokens))
    return chunks


def is_structure(line: str) -> bool:
    """Whether this module reads `line` as a heading or a code fence (outside code)."""
    return _HEADING.match(line) is not None or _opens_fence(line) is not None


def _opens_fence(line: str) -> str | None:
    """The fence `line` opens, if any (a backtick fence's info string has no backtick)."""
    match = _FENCE.match(line)
    if match is None or (match.group(1)[0] == "`" and "`" in match.group(2)):
        return None
    return match.group(1)


def _closes_fence(line: str, fence: str) -> bool:
    """Whether `line` closes `fence`: the same character, at least as many, nothing after."""
    match = _FENCE.match(line)
    return (
        match is not None
        and match.group(1)[0] == fence[0]
        and len(match.group(1)) >= len(fence)
        and not match.group(2).strip()
    )


def _sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section; a heading line is its section's first paragraph."""
    path: list[tuple[int, str]] = []
    heading = ""
    blocks: list[str] = []
    lines: list[str] = []
    fence: str | None = None  # the open code fence: blank lines and '#' inside are not structure
    for line in text.split("\n"):
        if fence is not None:
            if _closes_fence(line, fence):
                fence = None
        elif (opened := _opens_fence(line)) is not None:
            fence = opened
        elif match := _HEADING.match(line):
            _close_paragraph(lines, blocks)
            if _has_body(blocks):
                yield heading, blocks
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2)))
            heading, blocks = " > ".join(title for _, title in path), [line.strip()]
            continue
        elif not line.strip():
            _close_paragraph(lines, blocks)
            continue
        lines.append(line)
    _close_paragraph(lines, blocks)
    if _has_body(blocks):
        yield heading, blocks


def _close_paragraph(lines: list[str], blocks: list[str]) -> None:
    block = "\n".join(lines).strip()
    if block:
        blocks.append(block)
    lines.clear()


def _has_body(blocks: list[str]) -> bool:
    # A section holding nothing but its heading adds nothing: its title lives on in the heading
    # path of the sections nested under it.
    return len(blocks) > 1 or (len(blocks) == 1 and not _HEADING.match(blocks[0]))


def _pack(blocks: list[str], heading: str, max_tokens: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    text, used = "", 0
    fresh = False  # whether `text` holds anything beyond the overlap it was seeded with
    for block in blocks:
        for i, unit in enumerate(_units(block, max_tokens - overlap)):
            size = count_tokens(unit)
            if fresh and used + size > max_tokens:
                chunks.append(Chunk(text, heading, used))
                text = _overlap(text, overlap)
                used, fresh = count_tokens(text), False
            # Units of one paragraph are rejoined with a space, paragraphs with a blank line.
            joiner = " " if i else "\n\n"
            text = f"{text}{joiner}{unit}" if text else unit
            used += size
            fresh = True
    if fresh:
        chunks.append(Chunk(text, heading, used))
    return chunks


def _units(block: str, limit: int) -> list[str]:
    """`block` whole, or cut into sentences, words or hard pieces of at most `limit` tokens."""
    if count_tokens(block) <= limit:
        return [block]
    units: list[str] = []
    for sentence in _SENTENCE_END.split(block):
        if count_tokens(sentence) <= limit:
            units.append(sentence)
            continue
        for word in sentence.split():
            while count_tokens(word) > limit:
                cut = _hard_cut(word, limit)
                units.append(word[:cut])
                word = word[cut:]
            units.append(word)
    return units


def _hard_cut(word: str, limit: int) -> int:
    """The longest prefix of `word` within `limit` tokens (at least one character)."""
    low, high = 1, len(word)
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(word[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return low


def _overlap(text: str, budget: int) -> str:
    """The trailing whole sentences of `text` that fit in `budget` tokens (may be empty)."""
    if budget == 0:
        return ""
    taken: list[str] = []
    used = 0
    for sentence in reversed(_SENTENCE_END.split(text.rsplit("\n\n", 1)[-1])):
        size = count_tokens(sentence)
        if used + size > budget:
            break
        taken.append(sentence)
        used += size
    return " ".join(reversed(taken))
