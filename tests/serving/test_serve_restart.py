"""`sqlray serve` killed with SIGKILL (the OOM killer, a crashed terminal) leaves Ray's HAProxy behind,
still bound to the serving port: the next `sqlray serve` on that machine clears it and serves."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_SERVE_HAPROXY_", "RAY_ADDRESS", "SQLRAY_TEST_KEY"))}
    return subprocess.Popen([sys.executable, "-m", "sqlray.cli", "serve", "--model", str(model), "--port", str(port)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def test_a_sigkilled_server_does_not_block_the_next_start(served_model, tmp_path):
    from sqlray.serving.cli import clear_stale_haproxy

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(served_model, port, tmp_path / "first.log")
    second = None
    try:
        _wait_ready(url, first, tmp_path / "first.log")
        first.send_signal(signal.SIGKILL)  # the CLI only: Ray's HAProxy is in another process group
        first.wait()
        time.sleep(3)
        second = _serve(served_model, port, tmp_path / "second.log")
        _wait_ready(url, second, tmp_path / "second.log")
        r = httpx.post(f"{url}/v1/sql", json={"context": "CREATE TABLE t (a INT);", "question": "count rows",
                                              "max_new_tokens": 4}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            if p is not None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # Ray's processes started by that CLI
                except ProcessLookupError:
                    pass
        time.sleep(2)
        clear_stale_haproxy()
