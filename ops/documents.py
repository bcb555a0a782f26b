"""Reading files as documents: what counts as text, and what a document's title is.

Shared by `garrison docs add` and the demo seed; the ingestion itself is
`agent.services.documents`.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


class UnreadableFile(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_document(path: Path, title: str | None = None) -> tuple[str, str]:
    """The (title, text) of a file, or `UnreadableFile` saying why it is not a document."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFile("file not found") from None
    except IsADirectoryError:
        raise UnreadableFile("is a directory") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    # NUL never occurs in text; checked first because NUL-laden binaries can be valid UTF-8.
    if b"\x00" in raw:
        raise UnreadableFile("binary file, not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise UnreadableFile("empty file")
    return title or title_of(path, text), text


def title_of(path: Path, text: str) -> str:
    """The first Markdown heading, or the file name for plain text or a headingless file."""
    if path.suffix.lower() in MARKDOWN_SUFFIXES:
        fenced = False
        for line in text.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced  # a '# comment' in a code block is not a heading
            elif not fenced and (match := _HEADING.match(line)):
                return match.group(1)[:300]
    return path.name
