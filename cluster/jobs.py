"""Ray job submission: any sqlray command as a job on a cluster, its logs streamed, its status as exit code.

A job runs once: if it fails, rerunning it is the submitter's choice (and training resumes from its
checkpoints when it reuses the run name)."""
from __future__ import annotations

import asyncio
import os
import shlex
import time

# What never travels with a job: environments, run outputs, caches, VCS data.
EXCLUDES = [".venv", ".venv/**", "runs", "runs/**", ".cache", ".cache/**", ".git", "**/__pycache__", "*.egg-info",
            ".pytest_cache", "benchmarks/out"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def default_address() -> str:
    """RAY_ADDRESS if it is an http URL, else the local cluster `sqlray cluster up` started, else Ray's default."""
    env = os.environ.get("RAY_ADDRESS", "")
    if env.startswith("http"):
        return env
    from sqlray.cluster.local import ClusterState, state_dir

    state = ClusterState.load(state_dir())
    return state.dashboard_url if state else "http://127.0.0.1:8265"


def client(address: str | None = None):
    from ray.job_submission import JobSubmissionClient

    if os.path.exists(os.path.expanduser("~/.ray/auth_token")) and "RAY_AUTH_MODE" not in os.environ:
        from sqlray.cluster.local import enable_token_auth

        enable_token_auth()  # clusters from `sqlray cluster up` check Ray's token; the client sends it
    return JobSubmissionClient(address or default_address())


def submit(entrypoint: list[str], address: str | None = None, working_dir: str = ".",
           env_vars: dict[str, str] | None = None, submission_id: str | None = None) -> str:
    if not entrypoint:
        raise ValueError("submit: nothing to run; put the command after `--`, e.g. -- sqlray train --config ...")
    runtime_env = {"working_dir": working_dir, "excludes": EXCLUDES,
                   "env_vars": dict(env_vars or {})}  # sqlray sets its own worker variables: no duplicates
    c = client(address)
    deadline = time.time() + 90
    while True:
        try:
            return c.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env,
                                submission_id=submission_id)
        except RuntimeError as e:
            # A head that just started has no job agent yet: that one error is worth waiting out.
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def follow(job_id: str, address: str | None = None, out=None) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    c = client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            print(chunk, end="", file=out, flush=True)

    try:
        asyncio.run(tail())
    except Exception:  # noqa: BLE001 - the log stream can drop (head restart); the status is what counts
        pass
    return wait(job_id, address)


def wait(job_id: str, address: str | None = None, timeout: float | None = None) -> str:
    c = client(address)
    deadline = time.time() + timeout if timeout is not None else None
    while True:
        status = str(c.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if deadline and time.time() > deadline:
            return status
        time.sleep(1)


def exit_code(status: str) -> int:
    return 0 if status == "SUCCEEDED" else 1
