"""HTTP delivery: one request per outbox row, to hosts on the allow-list only (httpx).

The allow-list is checked again here, at the moment of sending, with the same parser httpx
sends with. Redirects are never followed: a 3xx could point anywhere, and a webhook that moved
is a configuration matter, so it is a permanent failure naming the new location. Every request
carries `Idempotency-Key` (the row's key) for the receiver to deduplicate the one window in which
a row can be sent twice (see `agent.outbox.dispatcher`).

2xx is delivered. 408, 429 and 5xx are retried (honouring `Retry-After` in seconds), as are
timeouts and connection errors; any other 4xx is permanent, because the same request will be
refused the same way. Only the first few KB of an answer are read and kept.
"""

from __future__ import annotations

import httpx

from agent.domain import JSON
from agent.outbox.delivery import DeliveryFailed
from agent.outbox.egress import EGRESS_DENIED, EgressPolicy
from agent.outbox.settings import OutboxSettings
from agent.ports import OutboxItem

IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "garrison-outbox"
KEPT_BODY_BYTES = 2048
_RETRYABLE_4XX = frozenset({408, 429})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None  # an HTTP-date is left to the backoff


class HttpTransport:
    def __init__(self, settings: OutboxSettings) -> None:
        self._policy = EgressPolicy(settings.http_allow_hosts)
        # trust_env=False: a proxy from the environment must not stand between the checked
        # host and the connection; follow_redirects=False: see the module docstring.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=settings.outbox_delivery_timeout_s,
        )

    async def deliver(self, item: OutboxItem) -> JSON:
        payload = item.payload
        url = str(payload["url"])
        refusal = self._policy.refusal(url)
        if refusal is not None:
            raise DeliveryFailed(EGRESS_DENIED, refusal, permanent=True)
        headers = {
            **payload.get("headers", {}),
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: item.idempotency_key,
        }
        body = payload.get("body")
        request = self._client.build_request(
            str(payload["method"]), url, headers=headers, json=body if body is not None else None
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                kept = await _read_some(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise DeliveryFailed("http_timeout", type(exc).__name__, permanent=False) from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(
                "http_unavailable", f"{type(exc).__name__}: {exc}", permanent=False
            ) from exc
        answer: JSON = {"status": response.status_code, "body": kept}
        status = response.status_code
        if 200 <= status < 300:
            return answer
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            raise DeliveryFailed(
                "redirect_not_followed",
                f"{status} to {location[:300]}: redirects are not followed",
                permanent=True,
                response=answer,
            )
        transient = status >= 500 or status in _RETRYABLE_4XX
        raise DeliveryFailed(
            "http_status",
            f"the receiver answered {status}",
            permanent=not transient,
            response=answer,
            retry_after_s=_retry_after(response) if transient else None,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_some(response: httpx.Response) -> str:
    """At most `KEPT_BODY_BYTES` of the answer: a receiver cannot fill the outbox table."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= KEPT_BODY_BYTES:
            break
    return b"".join(chunks)[:KEPT_BODY_BYTES].decode("utf-8", "replace")
