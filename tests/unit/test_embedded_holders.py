from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

from datastore.embedded import _forget_dead_holders


class _FakeServer:
    _lock = threading.Lock()


def test_dead_holders_are_forgotten_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    holders = tmp_path / ".handle_pids.json"
    holders.write_text(json.dumps([dead.pid, os.getpid()]))
    _forget_dead_holders(tmp_path, _FakeServer)
    assert json.loads(holders.read_text()) == [os.getpid()]


def test_missing_or_corrupt_holder_file_is_left_alone(tmp_path: Path) -> None:
    _forget_dead_holders(tmp_path, _FakeServer)  # no file: nothing to do
    holders = tmp_path / ".handle_pids.json"
    holders.write_text("not json")
    _forget_dead_holders(tmp_path, _FakeServer)
    assert holders.read_text() == "not json"
