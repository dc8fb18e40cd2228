"""A real multi-node Ray cluster on this machine: one head and N worker nodes, each its own raylet
(`ray start --block` processes we own), on loopback, with the dashboard and Jobs API bound to 127.0.0.1
and Ray's token authentication on. `down` stops only the processes `up` started."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlray.core import atomic_write_json

# Ray rewrites "127.0.0.1" to the host's outward IP when connecting; another loopback address stays as given.
LOOPBACK = "127.0.0.2"


def state_dir() -> Path:
    """Absolute, whatever the current folder: `down` from anywhere finds what `up` started."""
    return Path(os.environ.get("SQLRAY_CLUSTER_DIR") or "~/.sqlray/cluster").expanduser().resolve()


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, an
    identity that a reused pid cannot fake."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ClusterState:
    gcs_address: str
    dashboard_url: str
    nodes: list[dict] = field(default_factory=list)  # {"role", "pid", "log"}

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / "state.json", asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "ClusterState | None":
        f = folder / "state.json"
        return cls(**json.loads(f.read_text())) if f.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def node_env() -> dict[str, str]:
    """Nodes get token auth and this interpreter's bin folder on PATH (so a job's `sqlray ...` resolves)."""
    enable_token_auth()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path("~/.cache/sqlray/torch_extensions").expanduser()))
    return env


def enable_token_auth() -> None:
    """Token auth for this process and the nodes it starts; the token (~/.ray/auth_token) is made once."""
    from ray._private.authentication import authentication_token_setup as auth

    auth._enable_token_auth()  # sets RAY_AUTH_MODE=token and refreshes Ray's cached config
    auth.ensure_token_if_auth_enabled()


def _node_ports() -> list[str]:
    # Several raylets share one host: give each its own ports instead of Ray's fixed defaults.
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]


def _spawn(args: list[str], log: Path, env: dict, role: str) -> dict:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as f:
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return {"role": role, "pid": p.pid, "start_time": _start_time(p.pid), "log": str(log)}


_COUNT_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False, logging_level="ERROR")
want, deadline = int(sys.argv[3]), time.time() + float(sys.argv[4])
while True:
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    if alive >= want or time.time() > deadline:
        print(alive)
        break
    time.sleep(0.5)
"""


def count_nodes(gcs: str, want: int = 0, timeout: float = 0) -> int:
    """Alive nodes, waiting up to ``timeout`` for ``want``. In a child process: the caller may already be
    connected to another Ray cluster (ray.init allows one per process)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", _COUNT_NODES, gcs, LOOPBACK, str(want), str(timeout)],
                         capture_output=True, text=True, env=env, timeout=timeout + 120)
    if out.returncode != 0:
        raise RuntimeError(f"could not reach the cluster at {gcs}: {out.stderr.strip()[-400:]}")
    return int(out.stdout.strip().splitlines()[-1])


def _wait_nodes(gcs: str, n: int, timeout: float) -> None:
    alive = count_nodes(gcs, n, timeout)
    if alive < n:
        raise TimeoutError(f"only {alive} of {n} nodes joined {gcs} within {timeout}s")


def up(workers: int = 2, cpus_per_node: float = 1, head_cpus: float | None = None, port: int | None = None,
       dashboard_port: int | None = None, folder: Path | None = None, timeout: float = 120) -> ClusterState:
    """Start the cluster; if any step fails, what was started is stopped before the error is raised."""
    folder = folder or state_dir()
    if (old := ClusterState.load(folder)) and any(_ours(n) for n in old.nodes):
        raise RuntimeError(f"a cluster started from {folder} is still running ({old.gcs_address}); "
                           "run `sqlray cluster down` first")
    try:
        return _up(workers, cpus_per_node, head_cpus, port, dashboard_port, folder, timeout)
    except BaseException:
        down(folder, timeout=10)
        raise


def _up(workers, cpus_per_node, head_cpus, port, dashboard_port, folder: Path, timeout: float) -> ClusterState:
    env = node_env()
    port, dport = port or free_port(), dashboard_port or free_port()
    head_cpus = cpus_per_node if head_cpus is None else head_cpus
    gcs = f"{LOOPBACK}:{port}"
    state = ClusterState(gcs, f"http://{LOOPBACK}:{dport}")
    head = [_ray_bin(), "start", "--head", "--block", "--node-ip-address", LOOPBACK, "--port", str(port),
            "--dashboard-host", LOOPBACK, "--dashboard-port", str(dport), "--include-dashboard", "true",
            "--ray-client-server-port", str(free_port()), "--num-cpus", str(int(head_cpus)),
            "--num-gpus", "0", *_node_ports()]
    state.nodes.append(_spawn(head, folder / "head.log", env, "head"))
    state.save(folder)
    _wait_port(LOOPBACK, port, timeout)
    for i in range(workers):
        log = folder / f"worker{i + 1}.log"
        # Its own temp dir, as on a real host: raylets sharing one would unpack each job's working_dir
        # into the same folder, replacing it under a running driver. Short: it holds Unix sockets.
        tmp = tempfile.mkdtemp(prefix="sqlray-node-", dir="/tmp")
        cmd = [_ray_bin(), "start", "--block", "--address", gcs, "--node-ip-address", LOOPBACK,
               "--num-cpus", str(int(cpus_per_node)), "--num-gpus", "0", "--temp-dir", tmp, *_node_ports()]
        state.nodes.append({**_spawn(cmd, log, env, f"worker{i + 1}"), "temp_dir": tmp})
        state.save(folder)
        # One at a time: raylets starting together on one host can time out registering.
        _wait_nodes(gcs, i + 2, timeout)
    _wait_port(LOOPBACK, dport, timeout)
    return state


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _alive(pid: int) -> bool:
    try:  # reap it first if it is our own child that exited (a zombie still answers kill 0)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _ours(node: dict) -> bool:
    """The node's leader process is alive and is the one we started (same pid and start time)."""
    return _alive(node["pid"]) and _start_time(node["pid"]) == node.get("start_time")


def _signal_group(node: dict, sig: int) -> bool:
    """Signal the node's process group only if it is still ours. A live leader with another start time is a
    reused pid: not ours, left alone. A dead leader leaves its group id reserved while any member lives (the
    kernel never hands out a pid still in use as a process group), so those members are our orphans."""
    pid = node["pid"]
    if _alive(pid) and not _ours(node):
        return False
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_node(state: ClusterState, role: str, sig: int = signal.SIGKILL) -> None:
    """Stop one node's whole process group (its raylet and the workers it started)."""
    _signal_group(next(n for n in state.nodes if n["role"] == role), sig)


def down(folder: Path | None = None, timeout: float = 30) -> list[str]:
    """Stop worker nodes first, then the head; only process groups this module started."""
    folder = folder or state_dir()
    state = ClusterState.load(folder)
    if state is None:
        return []
    stopped = []
    for node in sorted(state.nodes, key=lambda n: n["role"] == "head"):
        if _alive(node["pid"]) and not _ours(node):
            continue  # the pid now belongs to another process: never signal it
        if _ours(node):
            _signal_group(node, signal.SIGTERM)
            deadline = time.time() + timeout
            while _alive(node["pid"]) and time.time() < deadline:
                time.sleep(0.2)
            stopped.append(node["role"])
        _signal_group(node, signal.SIGKILL)  # whatever of its process group outlived the leader
        if node.get("temp_dir"):
            shutil.rmtree(node["temp_dir"], ignore_errors=True)
    (folder / "state.json").unlink(missing_ok=True)
    # `ray start` records the head for later ray.init() calls; a dead one must not be found there.
    current = Path("/tmp/ray/ray_current_cluster")
    if current.exists() and current.read_text().strip() == state.gcs_address:
        current.unlink(missing_ok=True)
    return stopped


def status(folder: Path | None = None) -> dict:
    state = ClusterState.load(folder or state_dir())
    if state is None:
        return {"running": False}
    nodes = [{**n, "alive": _ours(n)} for n in state.nodes]
    info: dict = {"running": any(n["alive"] for n in nodes), "address": state.gcs_address,
                  "dashboard": state.dashboard_url, "nodes": nodes}
    if info["running"]:
        info["ray_nodes_alive"] = count_nodes(state.gcs_address)
    return info
