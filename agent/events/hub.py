"""The in-process fan-out of run event notifications: one LISTEN connection, many watchers.

A process holds one `EventHub`. The first subscription starts the listener (the store's
`listen`, on a connection of its own); every notification wakes the subscriptions of its run.
A wake-up only says "read the table again": what a watcher sends comes from the table, never
from a notification, so a lost or duplicated notification cannot lose or repeat an event.
When the listener is down (or not up yet) subscriptions are woken on every change of state and
their owners poll; see `agent.events.stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from types import TracebackType
from typing import Self

from agent.events.ports import EventStore

log = logging.getLogger(__name__)


class Subscription:
    """One watcher's interest in one run. Use as a context manager; leaving it unsubscribes."""

    def __init__(self, hub: EventHub, run_id: uuid.UUID) -> None:
        self.run_id = run_id
        self.closed = False
        """Set when the hub shuts down: the watcher should end."""
        self._hub = hub
        self._woken = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether notifications are flowing; if not, the watcher must poll."""
        return self._hub.listening

    def wake(self) -> None:
        self._woken.set()

    def clear(self) -> None:
        """Forget past wake-ups. Call it *before* reading the table, so a notification that
        arrives during the read wakes the next wait instead of being lost."""
        self._woken.clear()

    async def wait(self, timeout_s: float) -> bool:
        """Until woken (True) or `timeout_s` passes (False)."""
        try:
            await asyncio.wait_for(self._woken.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hub._unsubscribe(self)


class EventHub:
    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.listening = False

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    def subscribe(self, run_id: uuid.UUID) -> Subscription:
        """Register interest in a run at once (no await), starting the listener if needed."""
        subscription = Subscription(self, run_id)
        self._subscriptions.setdefault(run_id, set()).add(subscription)
        if self._listener is None:
            self._listener = asyncio.create_task(
                self._store.listen(self._on_notify, self._on_state), name="garrison-run-events"
            )
            self._listener.add_done_callback(self._listener_ended)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.run_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.run_id]

    def _on_notify(self, run_id: uuid.UUID, _event_id: int) -> None:
        for subscription in self._subscriptions.get(run_id, ()):
            subscription.wake()

    def _on_state(self, up: bool) -> None:
        self.listening = up
        # Up: notifications sent while nobody listened are lost, so everyone reads again.
        # Down: everyone switches to polling now rather than after their current wait.
        self._wake_all()

    def _listener_ended(self, task: asyncio.Task[None]) -> None:
        # `listen` only ends by cancellation; anything else is a bug. Watchers fall back to
        # polling and the next subscription starts a new listener.
        if self._listener is task:
            self._listener = None
        self.listening = False
        if not task.cancelled() and task.exception() is not None:
            log.error("the run events listener failed", exc_info=task.exception())
        self._wake_all()

    def _wake_all(self) -> None:
        for subs in self._subscriptions.values():
            for subscription in subs:
                subscription.wake()

    async def aclose(self) -> None:
        """Stop the listener and end every subscription (their watchers end their streams).

        The hub stays usable: a later subscription starts a listener again.
        """
        for subs in self._subscriptions.values():
            for subscription in subs:
                subscription.closed = True
        self._wake_all()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self.listening = False
