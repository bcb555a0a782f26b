"""Shared fixtures: one embedded Postgres per session, a fresh migrated database per test,
a scripted model over real HTTP, and a guard that fails any connection off this machine."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.domain import AgentDefinition, Principal, Role, Tenant
from agent.runtime import Services, Settings, open_services
from agent.settings import AgentSettings, ApiSettings
from datastore import migrate
from datastore.embedded import EmbeddedPostgres
from datastore.settings import DatabaseSettings
from serving.settings import ServingSettings
from serving.testing.scripted import ScriptedModelServer

TEMPLATE_DB = "garrison_template"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class EgressBlocked(PermissionError):
    """An OSError, so code under test cleans up its socket as for any refused connection."""


_egress_attempts: list[str] = []


def _check_local(sock: socket.socket, address: Any) -> None:
    if sock.family == socket.AF_UNIX:
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        # Recorded as well as raised: code that swallows connection errors still fails the test.
        _egress_attempts.append(repr(address))
        raise EgressBlocked(f"test tried to connect off this machine: {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_local(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_local(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def no_network_egress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The appliance must never call out; any non-loopback connection fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    _egress_attempts.clear()
    yield
    attempts = list(_egress_attempts)
    _egress_attempts.clear()
    if attempts:
        pytest.fail(f"connections off this machine were attempted: {attempts}")


@dataclass(frozen=True)
class PgCluster:
    admin_url: str
    data_dir: Path

    def url_for(self, database: str) -> str:
        base, _, query = self.admin_url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{database}?{query}"


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    data_dir = tmp_path_factory.mktemp("garrison-data")
    server = EmbeddedPostgres(data_dir)
    server.start()
    cluster = PgCluster(admin_url=server.admin_url(), data_dir=data_dir)
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    migrate.upgrade(cluster.url_for(TEMPLATE_DB))
    yield cluster
    server.stop()


def create_database(cluster: PgCluster, *, migrated: bool = True) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    template = f'TEMPLATE "{TEMPLATE_DB}"' if migrated else ""
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" {template}')
    return name


def drop_database(cluster: PgCluster, name: str) -> None:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database, migrated to head, for this test only."""
    name = create_database(pg_cluster)
    yield pg_cluster.url_for(name)
    drop_database(pg_cluster, name)


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def settings(database_url: str, scripted_model: ScriptedModelServer, tmp_path: Path) -> Settings:
    return Settings(
        database=DatabaseSettings(database_url=database_url, data_dir=tmp_path / "data"),
        serving=ServingSettings(
            chat_url=scripted_model.base_url,
            embed_url=scripted_model.base_url,
            model_timeout_s=5.0,
        ),
        agent=AgentSettings(poll_interval_s=0.02, lease_seconds=10.0),
        api=ApiSettings(port=0),
    )


@pytest.fixture
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    svc = await open_services(settings, database_url, upgrade=False)
    yield svc
    await svc.aclose()


@dataclass(frozen=True)
class TenantFixture:
    tenant: Tenant
    agent: AgentDefinition
    principal: Principal
    secret: str


async def make_tenant(
    services: Services,
    name: str,
    *,
    max_steps: int = 6,
    roles: Sequence[Role] = (Role.ADMIN,),
) -> TenantFixture:
    """A tenant with an `assistant` agent and a key. The key is the tenant's admin by default:
    these fixtures exercise features, not access control (tests/api/test_roles.py does)."""
    tenant = await services.tenancy.create_tenant(name, actor="test")
    agent = await services.tenancy.put_agent(
        name,
        "assistant",
        instructions="Answer questions from the organisation's documents.",
        max_steps=max_steps,
        actor="test",
    )
    key, secret = await services.keys.create(name, "test key", roles, actor="test")
    principal = await services.keys.authenticate(secret)
    assert principal.key_id == key.id
    return TenantFixture(tenant=tenant, agent=agent, principal=principal, secret=secret)


@pytest.fixture
async def acme(services: Services) -> TenantFixture:
    return await make_tenant(services, "acme")


@pytest.fixture
async def globex(services: Services) -> TenantFixture:
    return await make_tenant(services, "globex")
