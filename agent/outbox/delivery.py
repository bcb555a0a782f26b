"""What a delivery channel is, and how it says a delivery failed.

A transport (`email`, `http`) sends one outbox row and returns what the receiver answered, or
raises `DeliveryFailed`: permanent when trying again cannot help (the receiver refused the
request, the destination is no longer allowed), transient otherwise (timeouts, refused
connections, a receiver that is down or busy). The dispatcher turns that into `failed` or a
retry with backoff; transports know nothing about the outbox table.
"""

from __future__ import annotations

from typing import Protocol

from agent.domain import JSON
from agent.ports import OutboxItem


class DeliveryFailed(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        permanent: bool,
        response: JSON | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent
        self.response = response
        self.retry_after_s = retry_after_s
        """What the receiver asked for (HTTP `Retry-After`), honoured up to the backoff cap."""


class Transport(Protocol):
    async def deliver(self, item: OutboxItem) -> JSON:
        """Send the row's payload once, carrying its idempotency key; return the answer."""
        ...

    async def aclose(self) -> None: ...
