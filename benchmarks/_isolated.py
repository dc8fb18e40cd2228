"""Measuring in a fresh process (gpu_memory.py, step_time.py): nothing of an earlier variant's model stays
allocated, and each child is a one-rank job of its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def as_single_rank(port: int) -> None:
    """The torch.distributed variables of a one-process job, where the caller set none."""
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(k, v)


def report(result: dict) -> None:
    """The child's answer, on the line ``measure_in_child`` looks for."""
    print("RESULT " + json.dumps(result), flush=True)


def measure_in_child(cmd: list[str], label: str, timeout: float | None = None) -> dict:
    """Run ``cmd``; its last RESULT line, or its output's tail and an exit naming ``label``."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
        sys.exit(f"{label}: the measuring process failed (exit {out.returncode})")
    return json.loads(line[-1][len("RESULT "):])
