"""The outbox dispatcher: delivers the side effects committed steps asked for.

A dispatcher claims due rows in batches (`FOR UPDATE SKIP LOCKED` under a lease, so any number
of dispatchers in any number of processes share the table without blocking each other or
claiming a row twice), delivers each through its kind's transport under a deadline, and records
the outcome: delivered; retried later with exponential backoff and jitter; or failed, when the
receiver refused for good or `outbox_max_attempts` is used up. Nothing is ever delivered for a
step that did not commit, because the row only exists once the step's transaction commits.

Delivery is at least once per idempotency key, and at most once except in one window that no
outbox can close: the receiver took the request, and then this dispatcher died (or lost the
database) before it could mark the row delivered. The lease then expires, another dispatcher
claims the row, and it is sent again — with the same idempotency key (`Idempotency-Key` for
HTTP, a `Message-ID` derived from the key and `X-Garrison-Idempotency-Key` for email), so a
receiver that remembers keys sees the duplicate for what it is. A dispatcher that finishes
sending after its lease ran out finds its bookkeeping refused (the row is someone else's) and
logs it; the lease is at least twice the delivery deadline so this needs a stalled process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping

from agent.outbox.delivery import DeliveryFailed, Transport
from agent.outbox.email import SmtpTransport
from agent.outbox.http import HttpTransport
from agent.outbox.settings import OutboxSettings
from agent.ports import OutboxItem, OutboxStore

log = logging.getLogger(__name__)


def new_dispatcher_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:outbox:{uuid.uuid4().hex[:6]}"


def backoff_delay(
    attempts: int, settings: OutboxSettings, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, capped, with
    "equal jitter" (half fixed, half random) so retries of many rows spread out but never
    come back at once."""
    exponent = min(max(attempts - 1, 0), 32)  # 2**32 * base is past any cap already
    growth = float(2**exponent)
    ceiling = min(settings.outbox_backoff_cap_s, settings.outbox_backoff_base_s * growth)
    return ceiling / 2 + rand() * ceiling / 2


def default_transports(settings: OutboxSettings) -> dict[str, Transport]:
    return {"email": SmtpTransport(settings), "http": HttpTransport(settings)}


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        settings: OutboxSettings,
        *,
        dispatcher_id: str | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._owns_transports = transports is None
        self._transports = dict(transports) if transports is not None else None
        self.dispatcher_id = dispatcher_id or new_dispatcher_id()
        self._stop = asyncio.Event()
        self.delivered = 0
        self.retried = 0
        self.failed = 0

    def stop(self) -> None:
        self._stop.set()

    def _by_kind(self) -> dict[str, Transport]:
        # Made on first use, on the running loop: httpx clients belong to the loop they serve.
        if self._transports is None:
            self._transports = default_transports(self._settings)
        return self._transports

    async def run_forever(self) -> None:
        """Deliver until `stop()`; then finish the batch in hand and return."""
        try:
            while not self._stop.is_set():
                try:
                    handled = await self.run_once()
                except Exception as exc:  # the database being down must not kill the dispatcher
                    log.warning("outbox dispatcher %s could not claim: %s", self.dispatcher_id, exc)
                    handled = 0
                if handled == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._stop.wait(), self._settings.outbox_poll_interval_s
                        )
        finally:
            await self.aclose()

    async def run_until_idle(self) -> int:
        """Deliver batches until nothing is due (tests, batch jobs); returns rows handled."""
        total = 0
        while handled := await self.run_once():
            total += handled
        return total

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver them concurrently; returns how many."""
        s = self._settings
        items = await self._store.claim_due(
            self.dispatcher_id, s.outbox_batch_size, s.outbox_lease_seconds, s.outbox_max_attempts
        )
        outcomes = await asyncio.gather(*(self._deliver(i) for i in items), return_exceptions=True)
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Most likely the database went away while recording the outcome: the row keeps
                # its lease and is claimed again when it expires.
                log.warning("outbox row %s: outcome not recorded: %s", item.id, outcome)
        return len(items)

    async def aclose(self) -> None:
        if self._owns_transports and self._transports is not None:
            for transport in self._transports.values():
                await transport.aclose()
            self._transports = None

    async def _deliver(self, item: OutboxItem) -> None:
        transport = self._by_kind().get(item.kind)
        try:
            if transport is None:
                raise DeliveryFailed(
                    "unknown_kind", f"no transport for {item.kind!r}", permanent=True
                )
            response = await asyncio.wait_for(
                transport.deliver(item), self._settings.outbox_delivery_timeout_s
            )
        except DeliveryFailed as exc:
            await self._failed(item, exc)
            return
        except TimeoutError:
            deadline = self._settings.outbox_delivery_timeout_s
            await self._failed(
                item, DeliveryFailed("timeout", f"no answer within {deadline:g} s", permanent=False)
            )
            return
        except Exception as exc:
            # A transport bug must not lose the row: it is retried and the error is on record.
            log.exception("outbox row %s: %s delivery raised", item.id, item.kind)
            await self._failed(
                item,
                DeliveryFailed("delivery_error", f"{type(exc).__name__}: {exc}", permanent=False),
            )
            return
        if await self._store.mark_delivered(item.id, self.dispatcher_id, response):
            self.delivered += 1
        else:
            log.warning(
                "outbox row %s (%s) was delivered after this dispatcher's lease ran out; another "
                "may deliver it again under the same idempotency key",
                item.id,
                item.idempotency_key,
            )

    async def _failed(self, item: OutboxItem, failure: DeliveryFailed) -> None:
        s = self._settings
        error = f"{failure.code}: {failure.message}"[:2000]
        if failure.permanent or item.attempts >= s.outbox_max_attempts:
            if await self._store.mark_failed(item.id, self.dispatcher_id, error, failure.response):
                self.failed += 1
            log.warning(
                "outbox row %s failed after %d attempt(s): %s", item.id, item.attempts, error
            )
            return
        delay = backoff_delay(item.attempts, s)
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, s.outbox_backoff_cap_s))
        if await self._store.retry_later(
            item.id, self.dispatcher_id, error, failure.response, delay
        ):
            self.retried += 1
        log.info(
            "outbox row %s: attempt %d failed (%s); retry in %.1f s",
            item.id,
            item.attempts,
            error,
            delay,
        )
