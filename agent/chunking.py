"""Splitting a document's text into chunks for embedding.

Paragraphs (and Markdown headings, which start a new chunk) are packed up to a character budget;
a paragraph longer than the budget is cut at sentence, then word boundaries. Consecutive chunks
share a short overlap so a sentence cut at a boundary is still found whole in one of them.
"""

from __future__ import annotations

import re

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, *, max_chars: int, overlap_chars: int) -> list[str]:
    if max_chars <= overlap_chars:
        raise ValueError("max_chars must exceed overlap_chars")
    pieces: list[str] = []
    for block in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n")):
        block = block.strip()
        if block:
            pieces.extend(_split_long(block, max_chars - overlap_chars))
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        starts_section = piece.startswith("#")
        if current and (starts_section or len(current) + 2 + len(piece) > max_chars):
            chunks.append(current)
            tail = _overlap(current, overlap_chars) if not starts_section else ""
            current = f"{tail}\n\n{piece}" if tail else piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(block: str, limit: int) -> list[str]:
    if len(block) <= limit:
        return [block]
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(block):
        for word_run in _split_words(sentence, limit):
            if current and len(current) + 1 + len(word_run) > limit:
                out.append(current)
                current = word_run
            else:
                current = f"{current} {word_run}" if current else word_run
    if current:
        out.append(current)
    return out


def _split_words(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    out: list[str] = []
    current = ""
    for word in sentence.split():
        # A single "word" longer than the limit (a URL, base64) is cut hard.
        while len(word) > limit:
            out.append(word[:limit])
            word = word[limit:]
        if current and len(current) + 1 + len(word) > limit:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def _overlap(chunk: str, overlap_chars: int) -> str:
    if overlap_chars == 0:
        return ""
    tail = chunk[-overlap_chars:]
    # Start the overlap at a word boundary so no chunk begins mid-word.
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail
