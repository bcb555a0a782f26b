"""Reading files and folders as documents: which files, how big, what title, what metadata.

Shared by `garrison docs add` and the demo seed; parsing the formats is `agent.formats`, and the
ingestion itself `agent.services`. A folder is walked recursively for the formats Garrison reads
(text, Markdown, HTML, PDF), skipping hidden entries; a file named explicitly is read whatever
its name. A file is checked for size before it is read, so a huge file costs no memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from agent.formats import (
    MAX_DOCUMENT_BYTES,
    SUFFIXES,
    UnreadableDocument,
    clean_title,
    markdown_title,
    parse_document,
    too_large,
)
from agent.services.document_input import DocumentInput


def expand(paths: Sequence[Path]) -> tuple[list[Path], int]:
    """The files to read (explicit ones as given, folders walked), and how many were ignored."""
    found: list[Path] = []
    ignored = 0
    for path in paths:
        if not path.is_dir():
            found.append(path)  # a missing or unreadable one is reported when it is read
            continue
        for file in _walk(path):
            if file.suffix.lower() in SUFFIXES:
                found.append(file)
            else:
                ignored += 1
    return found, ignored


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def estimated_bytes(files: Sequence[Path]) -> int:
    total = 0
    for file in files:
        try:
            total += file.stat().st_size
        except OSError:
            continue  # reported when it is read
    return total


def read_document(
    path: Path,
    title: str | None = None,
    *,
    tags: Sequence[str] = (),
    metadata: dict[str, object] | None = None,
    key: str | None = None,
) -> DocumentInput:
    """The file as a document, or `UnreadableDocument` saying why it is not one."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise UnreadableDocument("is a directory")
        if size > MAX_DOCUMENT_BYTES:  # checked before reading, so a huge file costs no memory
            raise UnreadableDocument(too_large(size))
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableDocument("file not found") from None
    except OSError as exc:
        raise UnreadableDocument(f"cannot read: {exc.strerror or exc}") from None
    parsed = parse_document(raw, name=path.name)
    source = str(path.resolve())
    return DocumentInput(
        text=parsed.text,
        title=title or parsed.title or path.name,
        format=parsed.text_format,
        metadata={"filename": path.name, "bytes": size, "format": parsed.format.value}
        | (metadata or {}),
        tags=tuple(tags),
        key=key,
        source=source,
    )


def title_of(path: Path, text: str) -> str:
    """The first Markdown heading, or the file name for plain text or a headingless file."""
    if path.suffix.lower() in (".md", ".markdown"):
        return markdown_title(text) or path.name
    return clean_title(path.name) or path.name
