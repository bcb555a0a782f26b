"""Where a key sits in a TOML document: line numbers that `tomllib` does not give.

`tomllib` reports positions only for syntax errors; a value that parses but does not validate
has none. This index scans the source text once and remembers, per table block and dotted key
path, the line where each key (or table header) first appears, so an error about
`deployments[2].placement.gpus` can point at its line. It is deliberately approximate: it reads
headers and `key =` lines and ignores what multi-line strings and arrays contain, which is all a
models file needs. It knows nothing about what the keys mean.
"""

from __future__ import annotations

import re

Block = tuple[str, ...]
"""`("root",)`, `("routes",)`, `("deployments", i)` as a string index, or `("table", name)`."""

_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[|\[)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_SPLIT = re.compile(_PART)


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _SPLIT.findall(dotted))


def deployment_block(index: int) -> Block:
    return ("deployments", str(index))


class LineIndex:
    """Line numbers (1-based) of table headers and keys in one TOML source text."""

    def __init__(self, source: str, array_table: str = "deployments") -> None:
        self._lines: dict[tuple[Block, tuple[str, ...]], int] = {}
        block: Block = ("root",)
        prefix: tuple[str, ...] = ()
        count = -1
        for number, text in enumerate(source.splitlines(), start=1):
            header = _HEADER.match(text)
            if header:
                parts = _parts(header.group(2))
                # A table header also names a key of the document root, for "unknown key" errors.
                self._lines.setdefault((("root",), parts[:1]), number)
                if header.group(1) == "[[" and parts == (array_table,):
                    count += 1
                    block, prefix = deployment_block(count), ()
                elif parts[0] == array_table and len(parts) > 1 and count >= 0:
                    block, prefix = deployment_block(count), parts[1:]
                elif len(parts) == 1:
                    block, prefix = (parts[0],), ()
                else:
                    block, prefix = ("table", ".".join(parts)), ()
                self._lines.setdefault((block, prefix), number)
                continue
            key = _KEY.match(text)
            if key:
                self._lines.setdefault((block, prefix + _parts(key.group(1))), number)

    def find(self, block: Block, path: tuple[str, ...] = ()) -> int:
        """The line of `path` in `block`, else of its nearest enclosing key, else 1."""
        for end in range(len(path), -1, -1):
            line = self._lines.get((block, path[:end]))
            if line is not None:
                return line
        return 1
