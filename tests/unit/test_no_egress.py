"""The suite's egress guard really blocks: a test that reached off-box would fail, not pass."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.conftest import EgressBlocked, _egress_attempts


def test_non_loopback_connection_is_refused_and_recorded() -> None:
    with socket.socket() as s, pytest.raises(EgressBlocked, match="off this machine"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routable, never contacted
    assert _egress_attempts == ["('192.0.2.1', 443)"]
    _egress_attempts.clear()  # this test provoked it on purpose


def test_http_client_off_box_is_refused_even_when_the_error_is_swallowed() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://192.0.2.1/", timeout=1)
    assert len(_egress_attempts) == 1
    _egress_attempts.clear()


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert _egress_attempts == []
