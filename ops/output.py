"""Everything the CLI prints: human text, one JSON document, progress lines, errors.

Commands decide *what* to say; this module decides *how*, so `--json` means the same thing
everywhere: exactly one JSON document on stdout, and errors as `{"error": {"code", "message"}}`
on stderr. Human output is plain text (no colour, no box drawing) so it survives pipes, logs
and `grep`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")
]


def to_json(data: Any) -> str:
    return json.dumps(data, default=_jsonable, ensure_ascii=False, indent=2)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, uuid.UUID | Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def when(value: datetime | None, missing: str = "-") -> str:
    """A timestamp for people: local time to the second."""
    return missing if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters, saying how much was left out."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}… ({len(flat) - limit} more chars)"


@dataclasses.dataclass
class ProgressStep:
    """Handed to the body of `Output.progress`; set `detail` to say more than "ok"."""

    detail: str = ""


class Output:
    """Where a command's output goes, in the mode the caller chose."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    @property
    def _chatter(self) -> TextIO:
        # In JSON mode stdout carries the one document only; everything else goes to stderr.
        return sys.stderr if self.json_mode else sys.stdout

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """The command's result: `data` as JSON, or whatever `human` prints."""
        if self.json_mode:
            typer.echo(to_json(data))
        else:
            human()

    def line(self, text: str = "") -> None:
        """Human-only text; silent in JSON mode."""
        if not self.json_mode:
            typer.echo(text)

    def say(self, text: str) -> None:
        """Information people need in either mode (stderr in JSON mode)."""
        typer.echo(text, file=self._chatter)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
        if not rows:
            self.line(empty)
            return
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        for cells in (headers, *rows):
            padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            self.line("  ".join(padded).rstrip())

    def fields(self, pairs: Sequence[tuple[str, str]], indent: str = "  ") -> None:
        """`label: value` lines with the values aligned."""
        width = max((len(label) for label, _ in pairs), default=0) + 1
        for label, value in pairs:
            # An empty label continues the value above it.
            self.line(f"{indent}{(label + ':' if label else '').ljust(width)} {value}")

    @contextmanager
    def progress(self, label: str) -> Iterator[ProgressStep]:
        """`label ... ok (0.8 s)` around a slow phase, `failed` if it raises."""
        stream = self._chatter
        stream.write(f"{label} ... ")
        stream.flush()
        step = ProgressStep()
        started = time.perf_counter()
        try:
            yield step
        except BaseException:
            stream.write("failed\n")
            stream.flush()
            raise
        elapsed = time.perf_counter() - started
        suffix = f"; {step.detail}" if step.detail else ""
        stream.write(f"ok ({elapsed:.1f} s{suffix})\n")
        stream.flush()

    def error(self, code: str, message: str) -> None:
        if self.json_mode:
            payload = {"error": {"code": code, "message": message}}
            typer.echo(json.dumps(payload, ensure_ascii=False), err=True)
        else:
            typer.echo(f"error[{code}]: {message}", err=True)
