"""Loop detection: pure functions over a run's steps that say when the model is going round in
circles, so the loop can stop the run (`loop_detected`) instead of spending its budget.

Two rules, over the tool calls of the run (completed steps whose tool is not `finish`):

* **repeat** — the same call happened `max_repeats` times: the same tool, the same arguments
  once normalised (canonical JSON; strings with whitespace collapsed and case folded), and the
  same result (canonical JSON, hashed; values that only name the step, such as an outbox
  idempotency key, left out).
* **stale** — the last `stale_window` tool calls in a row brought no new information. A result
  brings the chunk ids of its search hits, or else its own hash; it is new when at least one of
  them was not seen before in the run. The passages shown with the task count as seen.

`LoopTracker` applies the rules one step at a time (constant work per step, for the run loop);
`detect_loop` is the same over a whole history. Neither does any I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.domain import Step, StepStatus
from agent.tools.finish import Finish

VOLATILE_RESULT_KEYS = frozenset({"idempotency_key"})
"""Result fields that differ on every step by construction; comparing them would hide a loop."""
CALL_SHOWN_CHARS = 200


def normalise(value: Any) -> Any:
    """Arguments as compared: strings with whitespace collapsed and case folded, all the way
    down; other values unchanged (key order is removed by `canonical`)."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    return value


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_RESULT_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def result_fingerprint(result: Any) -> str:
    return hashlib.sha256(canonical(_stable(result)).encode()).hexdigest()[:32]


def information(result: Any, fingerprint: str) -> frozenset[str]:
    """What a result tells the model: the chunks a search found, or else the result itself."""
    hits = result.get("hits") if isinstance(result, dict) else None
    if isinstance(hits, list) and all(isinstance(h, dict) and "chunk_id" in h for h in hits):
        return frozenset(f"chunk:{h['chunk_id']}" for h in hits)
    return frozenset({f"result:{fingerprint}"})


def shown_call(tool: str, arguments: Any) -> str:
    """A tool call for people, e.g. `search_documents {"query":"annual leave"}`."""
    text = f"{tool} {canonical(arguments if arguments is not None else {})}"
    return text if len(text) <= CALL_SHOWN_CHARS else text[: CALL_SHOWN_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class LoopDetected:
    rule: str
    """`repeat` or `stale`."""
    steps: tuple[int, ...]
    """The steps that make the loop, oldest first."""
    call: str
    """The repeated call (for `stale`, the last of the window), as `shown_call` writes it."""

    @property
    def detail(self) -> str:
        steps = ", ".join(str(n) for n in self.steps)
        if self.rule == "repeat":
            return (
                f"the model repeated the same tool call with the same result {len(self.steps)} "
                f"times (steps {steps}): {self.call}"
            )
        return (
            f"the last {len(self.steps)} tool calls brought no new information (steps {steps}); "
            f"the last was: {self.call}"
        )


class LoopTracker:
    """The two rules applied incrementally; feed it every step of the run in order."""

    def __init__(self, max_repeats: int, stale_window: int) -> None:
        self._max_repeats = max_repeats
        self._stale_window = stale_window
        self._calls: dict[tuple[str, str], list[int]] = {}
        self._seen: set[str] = set()
        self._stale: deque[int] = deque(maxlen=max(stale_window, 1))
        """The current run of tool calls that brought nothing new (the last `stale_window`)."""

    @property
    def enabled(self) -> bool:
        return self._max_repeats > 0 or self._stale_window > 0

    def observe(self, step: Step) -> LoopDetected | None:
        """Take one more step into account; whether the run must stop after it."""
        if not self.enabled:
            return None
        passages = step.context.get("passages")
        if isinstance(passages, list):
            self._seen.update(f"chunk:{p['chunk_id']}" for p in passages if "chunk_id" in p)
        if step.status is not StepStatus.COMPLETED or step.tool in (None, Finish.name):
            return None
        tool = step.tool
        assert tool is not None
        fingerprint = result_fingerprint(step.result)
        found = self._repeat(step, tool, fingerprint)
        stale = self._staleness(step, tool, fingerprint)
        return found or stale

    def _repeat(self, step: Step, tool: str, fingerprint: str) -> LoopDetected | None:
        if self._max_repeats == 0:
            return None
        call = canonical({"tool": tool, "arguments": normalise(step.arguments or {})})
        numbers = self._calls.setdefault((call, fingerprint), [])
        numbers.append(step.number)
        if len(numbers) < self._max_repeats:
            return None
        return LoopDetected(
            "repeat", tuple(numbers[-self._max_repeats :]), shown_call(tool, step.arguments)
        )

    def _staleness(self, step: Step, tool: str, fingerprint: str) -> LoopDetected | None:
        units = information(step.result, fingerprint)
        new = not units <= self._seen
        self._seen |= units
        if self._stale_window == 0:
            return None
        if new:
            self._stale.clear()
            return None
        self._stale.append(step.number)
        if len(self._stale) < self._stale_window:
            return None
        return LoopDetected("stale", tuple(self._stale), shown_call(tool, step.arguments))


def detect_loop(
    steps: Iterable[Step], *, max_repeats: int, stale_window: int
) -> LoopDetected | None:
    """Whether a run whose steps so far are `steps` must stop after the last of them."""
    tracker = LoopTracker(max_repeats, stale_window)
    verdict = None
    for step in steps:
        verdict = tracker.observe(step)
    return verdict
