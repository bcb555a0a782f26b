"""The hot path's HTTP/1.1 client (`serving.http1`, under `serving.transport`) against a raw
server that answers exactly the bytes a test scripts: each framing, keep-alive and its limits,
and the failures the transport turns into serving errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from serving.errors import ModelTimeout, ModelUnavailable
from serving.transport import HttpTransport

Answer = Callable[[bytes], bytes | None]
"""Given one request (head and body), the raw bytes to send back; None hangs up instead."""


@dataclass
class RawServer:
    """Reads requests framed by Content-Length and writes whatever the test's `answer` says."""

    answer: Answer
    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer(answer=lambda _request: ok(b'{"ok":true}'))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with listener:
        yield server
        for writer in server.writers:
            writer.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers, body)


def transport(timeout_s: float = 5.0) -> HttpTransport:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k-1"}
    return HttpTransport("test-engine", headers, timeout_s)


async def test_a_request_carries_its_headers_and_body_and_connections_are_kept_alive(
    raw: RawServer,
) -> None:
    http = transport()
    for n in range(3):
        answer = await http.request("POST", raw.url, b'{"n":%d}' % n)
        assert (answer.status, answer.body) == (200, b'{"ok":true}')
    await http.aclose()
    assert raw.connections == 1
    head, _, body = raw.requests[2].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Host: 127.0.0.1:%d" % int(raw.url.split(":")[2].split("/")[0]) in lines
    assert b"Authorization: Bearer k-1" in lines
    assert b"Content-Length: 7" in lines
    assert body == b'{"n":2}'


async def test_a_get_has_no_body_and_no_length(raw: RawServer) -> None:
    http = transport()
    answer = await http.request("GET", raw.url.replace("/chat/completions", "/models"), None)
    await http.aclose()
    assert answer.ok
    assert raw.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")
    assert b"Content-Length" not in raw.requests[0]


async def test_chunked_answers_are_reassembled_and_trailers_skipped(raw: RawServer) -> None:
    raw.answer = lambda _r: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    http = transport()
    first = await http.request("POST", raw.url, b"{}")
    second = await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert first.body == second.body == b"hello world"
    assert raw.connections == 1  # a chunked answer ends cleanly: the connection is reused


async def test_an_answer_split_into_single_bytes_is_read_whole(raw: RawServer) -> None:
    reply = ok(b'{"split":"yes"}')

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        for i in range(len(reply)):
            writer.write(reply[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    listener = await asyncio.start_server(dribble, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        http = transport()
        answer = await http.request("POST", f"http://127.0.0.1:{port}/v1", b"{}")
        await http.aclose()
    assert answer.body == b'{"split":"yes"}'


async def test_a_body_until_close_and_connection_close_are_honoured(raw: RawServer) -> None:
    raw.answer = lambda _r: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    raw.close_after_answer = True
    http = transport()
    assert (await http.request("POST", raw.url, b"{}")).body == b"all of it"
    assert (await http.request("POST", raw.url, b"{}")).body == b"all of it"
    await http.aclose()
    assert raw.connections == 2  # never reused after the server said close


async def test_an_interim_100_answer_is_skipped(raw: RawServer) -> None:
    raw.answer = lambda _r: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")
    http = transport()
    answer = await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert (answer.status, answer.body) == (200, b"final")


async def test_error_statuses_come_back_as_answers(raw: RawServer) -> None:
    raw.answer = lambda _r: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nloading"
    http = transport()
    answer = await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert (answer.status, answer.ok, answer.text) == (503, False, "loading")


async def test_a_kept_alive_connection_the_server_closed_is_not_used_again(
    raw: RawServer,
) -> None:
    http = transport()
    await http.request("POST", raw.url, b"{}")
    for writer in raw.writers:  # the server times the idle connection out
        writer.close()
    await asyncio.sleep(0.05)
    answer = await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert answer.ok
    assert (raw.connections, len(raw.requests)) == (2, 2)


async def test_a_reused_connection_dropped_before_any_answer_is_retried_once_on_a_new_one(
    raw: RawServer,
) -> None:
    # The server closes a kept-alive connection just as the next request arrives on it (its
    # idle timeout racing the request): nothing was answered, so sending it again is safe.
    replies = iter([ok(b"first"), None, ok(b"again")])
    raw.answer = lambda _r: next(replies)
    http = transport()
    assert (await http.request("POST", raw.url, b"{}")).body == b"first"
    assert (await http.request("POST", raw.url, b"{}")).body == b"again"
    await http.aclose()
    assert (raw.connections, len(raw.requests)) == (2, 3)


async def test_a_server_hanging_up_on_a_fresh_connection_is_unavailable_not_retried(
    raw: RawServer,
) -> None:
    raw.answer = lambda _r: None
    http = transport()
    with pytest.raises(ModelUnavailable, match="unreachable"):
        await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert len(raw.requests) == 1


async def test_an_answer_cut_short_is_unavailable(raw: RawServer) -> None:
    raw.answer = lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    raw.close_after_answer = True
    http = transport()
    with pytest.raises(ModelUnavailable, match=r"unreachable.*before the whole answer"):
        await http.request("POST", raw.url, b"{}")
    await http.aclose()
    assert len(raw.requests) == 1  # bytes had come back: the request is not sent again


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
    ],
)
async def test_malformed_http_is_unavailable(raw: RawServer, reply: bytes) -> None:
    raw.answer = lambda _r: reply
    http = transport()
    with pytest.raises(ModelUnavailable, match="malformed HTTP"):
        await http.request("POST", raw.url, b"{}")
    await http.aclose()


async def test_headers_past_the_limit_are_refused(raw: RawServer) -> None:
    raw.answer = lambda _r: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000
    http = transport()
    with pytest.raises(ModelUnavailable, match="too large"):
        await http.request("POST", raw.url, b"{}")
    await http.aclose()


async def test_bytes_past_the_answer_retire_the_connection(raw: RawServer) -> None:
    raw.answer = lambda _r: ok(b"one") + b"garbage"
    http = transport()
    assert (await http.request("POST", raw.url, b"{}")).body == b"one"
    assert (await http.request("POST", raw.url, b"{}")).body == b"one"
    await http.aclose()
    assert raw.connections == 2


async def test_the_deadline_is_model_timeout_and_the_connection_is_not_reused(
    raw: RawServer,
) -> None:
    raw.answer = lambda _r: ok(b"fast")
    http = transport(timeout_s=0.2)
    assert (await http.request("POST", raw.url, b"{}")).body == b"fast"
    # Four of the ten bytes promised, then nothing: the deadline passes mid-answer.
    raw.answer = lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow"
    with pytest.raises(ModelTimeout, match="deadline"):
        await http.request("POST", raw.url, b"{}")
    raw.answer = lambda _r: ok(b"fast")
    assert (await http.request("POST", raw.url, b"{}")).body == b"fast"
    await http.aclose()
    assert raw.connections == 2


async def test_many_requests_at_once_each_get_their_own_answer(raw: RawServer) -> None:
    raw.answer = lambda request: ok(request.partition(b"\r\n\r\n")[2])
    http = transport()
    answers = await asyncio.gather(*(http.request("POST", raw.url, b"%d" % n) for n in range(50)))
    await http.aclose()
    assert [a.body for a in answers] == [b"%d" % n for n in range(50)]


@pytest.mark.parametrize("url", ["127.0.0.1:9/v1", "ftp://127.0.0.1/v1", "http:///v1"])
async def test_urls_that_cannot_be_requested_are_invalid(url: str) -> None:
    http = transport()
    with pytest.raises(ModelUnavailable, match="URL is invalid"):
        await http.request("GET", url, None)
    await http.aclose()


def test_line_breaks_in_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        HttpTransport("x", {"Authorization": "Bearer k\r\nX-Evil: 1"}, 5.0)
