"""The dispatcher against real receivers: retries and backoff, permanent failures, races between
dispatchers, and recovery of rows whose dispatcher died mid-delivery. Deliveries are counted at
the receivers, not taken from the dispatcher's word."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.domain import OutboxEffect, Run, RunOutcome, Step, StepStatus
from agent.errors import Conflict, NotFound
from agent.outbox.dispatcher import Dispatcher, backoff_delay
from agent.outbox.settings import OutboxSettings
from agent.ports import OutboxItem, OutboxStatus
from agent.runtime import Services
from tests.conftest import TenantFixture
from tests.outbox.conftest import HttpSink, SmtpSink


async def queue(services: Services, fx: TenantFixture, effects: list[OutboxEffect]) -> Run:
    """A run with one committed step that queued `effects` (as `send_email` etc. would)."""
    run = await services.runs.submit(fx.principal, "assistant", "queue side effects")
    claimed = await services.store.runs.claim_next("queuer", 30)
    assert claimed is not None
    assert claimed.id == run.id
    now = datetime.now(UTC)
    step = Step(
        run_id=run.id,
        number=1,
        status=StepStatus.COMPLETED,
        context={},
        decision={},
        tool="http_request",
        arguments={},
        result={"queued": True},
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        model_ms=0.0,
        tool_ms=0.0,
        started_at=now,
        finished_at=now,
    )
    await services.store.runs.record_step(step, "queuer", RunOutcome(), effects)
    return run


def post(sink: HttpSink, n: int = 0) -> OutboxEffect:
    return OutboxEffect(
        "http", {"method": "POST", "url": sink.url(f"/hook/{n}"), "headers": {}, "body": {"n": n}}
    )


def mail(to: str = "ops@example.org") -> OutboxEffect:
    return OutboxEffect("email", {"to": [to], "subject": "s", "body": "b"})


async def rows(services: Services, run: Run) -> list[OutboxItem]:
    return await services.store.outbox.list_items(tenant_id=None, run_id=run.id)


async def until_settled(dispatcher: Dispatcher, services: Services, run: Run) -> list[OutboxItem]:
    deadline = time.monotonic() + 15
    while True:
        await dispatcher.run_once()
        items = await rows(services, run)
        if all(i.status in (OutboxStatus.DELIVERED, OutboxStatus.FAILED) for i in items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.02)


def dispatcher(services: Services, name: str, **changes: Any) -> Dispatcher:
    settings = services.settings.outbox.model_copy(update=changes)
    return Dispatcher(services.store.outbox, settings, dispatcher_id=name)


async def test_a_failing_receiver_gets_it_after_retries_with_the_same_key(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(503, 503)
    run = await queue(services, acme, [post(http_sink)])
    d = dispatcher(services, "d1")
    try:
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert (item.status, item.attempts) == ("delivered", 3)
    assert item.last_error == "http_status: the receiver answered 503"
    assert http_sink.keys() == {f"{run.id}:1:0": 3}
    assert (d.retried, d.delivered, d.failed) == (2, 1, 0)


async def test_a_client_error_is_permanent_and_an_operator_can_retry_it(
    services: Services, acme: TenantFixture, globex: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(400)
    run = await queue(services, acme, [post(http_sink)])
    d = dispatcher(services, "d1")
    try:
        [item] = await until_settled(d, services, run)
        assert (item.status, item.attempts) == ("failed", 1)
        assert item.last_error == "http_status: the receiver answered 400"
        assert item.response == {"status": 400, "body": '{"status": 400}'}
        assert await d.run_until_idle() == 0  # failed rows stay put
        assert len(http_sink.received) == 1

        with pytest.raises(NotFound):  # another tenant's row, as on every read
            await services.outbox.retry(item.id, globex.tenant.id, actor="test")
        again = await services.outbox.retry(item.id, acme.tenant.id, actor="test")
        assert (again.status, again.attempts) == ("pending", 0)
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert (item.status, item.attempts) == ("delivered", 1)
    assert len(http_sink.received) == 2
    entries = await services.store.audit.list_entries(acme.tenant.id, 10)
    assert any(e.action == "outbox.retry" for e in entries)


async def test_retrying_a_row_that_did_not_fail_is_a_conflict(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    run = await queue(services, acme, [post(http_sink)])
    [item] = await rows(services, run)
    with pytest.raises(Conflict, match="is pending"):
        await services.outbox.retry(item.id, None, actor="test")
    with pytest.raises(NotFound):
        await services.outbox.retry(item.id + 1000, None, actor="test")


async def test_transient_failures_give_up_after_max_attempts(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(500, 502, 200)
    run = await queue(services, acme, [post(http_sink)])
    d = dispatcher(services, "d1", outbox_max_attempts=2)
    try:
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert (item.status, item.attempts) == ("failed", 2)
    assert "502" in (item.last_error or "")
    assert len(http_sink.received) == 2


async def test_a_receiver_too_slow_to_answer_is_retried(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(200, delay_s=1.5)  # past the 1 s delivery deadline
    run = await queue(services, acme, [post(http_sink)])
    d = dispatcher(services, "d1")
    try:
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert (item.status, item.attempts) == ("delivered", 2)
    assert (item.last_error or "").startswith(("http_timeout", "timeout"))


async def test_redirects_are_not_followed(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(302)
    run = await queue(services, acme, [post(http_sink)])
    d = dispatcher(services, "d1")
    try:
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert item.status == "failed"
    assert (item.last_error or "").startswith("redirect_not_followed: 302")
    assert len(http_sink.received) == 1


async def test_the_allow_list_is_checked_again_at_delivery(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    run = await queue(services, acme, [post(http_sink)])
    # The operator removed the host after the step queued the request.
    d = dispatcher(services, "d1", http_allow_hosts=["127.0.0.1:1"])
    try:
        [item] = await until_settled(d, services, run)
    finally:
        await d.aclose()
    assert item.status == "failed"
    assert (item.last_error or "").startswith("egress_denied: host 127.0.0.1:")
    assert http_sink.received == []


async def test_smtp_answers_decide_between_retry_and_failure(
    services: Services, acme: TenantFixture, smtp_sink: SmtpSink
) -> None:
    smtp_sink.refuse("451 4.3.0 try again later", "451 4.3.0 try again later")
    d = dispatcher(services, "d1")
    try:
        run = await queue(services, acme, [mail("a@example.org")])
        [first] = await until_settled(d, services, run)
        smtp_sink.refuse("554 5.7.1 rejected")
        second = await queue(services, acme, [mail("b@example.org")])
        [other] = await until_settled(d, services, second)
    finally:
        await d.aclose()
    # Two "not now" answers then acceptance for the first; a 5xx is final for the second.
    assert (first.status, first.attempts) == ("delivered", 3)
    assert (other.status, other.attempts) == ("failed", 1)
    assert "554" in (other.last_error or "")
    assert len(smtp_sink.messages) == 1
    assert smtp_sink.messages[0]["To"] == "a@example.org"


async def test_two_dispatchers_racing_over_50_rows_deliver_each_exactly_once(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    run = await queue(services, acme, [post(http_sink, n) for n in range(50)])
    a = dispatcher(services, "da", outbox_batch_size=4)
    b = dispatcher(services, "db", outbox_batch_size=4)
    try:
        await asyncio.gather(a.run_until_idle(), b.run_until_idle())
        # A delivery the loaded machine made fail (a refused or reset connection) is retried
        # after its backoff, which run_until_idle does not wait for: settle those too.
        settled = await until_settled(a, services, run)
    finally:
        await a.aclose()
        await b.aclose()
    assert {i.status for i in settled} == {"delivered"}
    keys = http_sink.keys()
    assert len(keys) == 50
    assert set(keys.values()) == {1}, [i.last_error for i in settled if i.attempts > 1]
    assert sorted(r.path for r in http_sink.received) == sorted(f"/hook/{n}" for n in range(50))
    assert a.delivered + b.delivered == 50
    assert a.delivered > 0
    assert b.delivered > 0
    assert {i.status for i in await rows(services, run)} == {"delivered"}


async def test_a_dispatcher_killed_mid_delivery_is_recovered_by_another(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    http_sink.answer(200, delay_s=3.0)  # the first delivery hangs at the receiver
    run = await queue(services, acme, [post(http_sink)])
    doomed = dispatcher(services, "doomed")
    task = asyncio.create_task(doomed.run_forever())
    deadline = time.monotonic() + 5
    while not http_sink.received:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    task.cancel()  # dies mid-delivery: nothing recorded, the row keeps its lease
    with pytest.raises(asyncio.CancelledError):
        await task
    [held] = await rows(services, run)
    assert (held.status, held.locked_by, held.attempts) == ("delivering", "doomed", 1)

    rescuer = dispatcher(services, "rescuer")
    try:
        assert await rescuer.run_once() == 0  # the lease still holds: no double claim
        [item] = await until_settled(rescuer, services, run)
    finally:
        await rescuer.aclose()
    assert (item.status, item.attempts) == ("delivered", 2)
    # The receiver saw the request twice, both times under the one key it can deduplicate on:
    # the window the dispatcher's docstring owns up to.
    assert http_sink.keys() == {f"{run.id}:1:0": 2}


async def test_a_row_that_kills_every_dispatcher_is_eventually_failed(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    run = await queue(services, acme, [post(http_sink)])
    store = services.store.outbox
    for attempt in (1, 2):  # two dispatchers claim it and die before reporting
        [claimed] = await store.claim_due(f"dead-{attempt}", 10, 0.05, 2)
        assert claimed.attempts == attempt
        await asyncio.sleep(0.1)
    assert await store.claim_due("next", 10, 0.05, 2) == []
    [item] = await rows(services, run)
    assert item.status == "failed"
    assert item.last_error == "abandoned: no dispatcher finished any of 2 attempt(s)"
    assert http_sink.received == []


async def test_a_lost_lease_cannot_overwrite_the_new_owners_outcome(
    services: Services, acme: TenantFixture, http_sink: HttpSink
) -> None:
    run = await queue(services, acme, [post(http_sink)])
    store = services.store.outbox
    [old] = await store.claim_due("old", 10, 0.05, 5)
    await asyncio.sleep(0.1)
    [new] = await store.claim_due("new", 10, 30, 5)
    assert new.id == old.id
    assert not await store.mark_delivered(old.id, "old", {"late": True})
    assert not await store.mark_failed(old.id, "old", "late", None)
    assert await store.mark_delivered(new.id, "new", {"status": 200})
    [item] = await rows(services, run)
    assert (item.status, item.response) == ("delivered", {"status": 200})


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    s = OutboxSettings(outbox_backoff_base_s=1, outbox_backoff_cap_s=10)
    assert [backoff_delay(n, s, lambda: 0.0) for n in (1, 2, 3, 4, 5, 50)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        5.0,
        5.0,
    ]
    assert [backoff_delay(n, s, lambda: 1.0) for n in (1, 2, 5)] == [1.0, 2.0, 10.0]
