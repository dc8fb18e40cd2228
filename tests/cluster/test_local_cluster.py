"""A real 3-node Ray cluster on loopback (head + 2 worker raylets), jobs submitted through the Jobs API."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sqlray.cluster import jobs, local

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    # The head takes no training work: the two workers of a run must land on the two worker nodes,
    # and after one of them dies the other (2 CPUs) can host the restarted group.
    state = local.up(workers=2, cpus_per_node=2, head_cpus=0, folder=folder)
    yield state, folder
    # After SIGTERM the head's `ray start`, GCS and one Python process linger ~30 s (measured; the workers
    # exit in 1-2 s): SIGKILL after 5 s instead, for a throwaway cluster. `sqlray cluster down` waits 30 s.
    stopped = local.down(folder, timeout=5)
    assert {"head", "worker1"} <= set(stopped)  # worker2 was killed by the fault test


def _train_cmd(tiny_model, storage, name, *extra):
    return ["sqlray", "train", "--config", "configs/tiny-cpu.yaml", "--no-eval", f"model.name_or_path={tiny_model}",
            "model.create_tiny_if_missing=false", "data.max_train_rows=600", "train.micro_batch_size=8",
            f"run.storage_path={storage}", f"run.name={name}", "scaling.placement_strategy=SPREAD", *extra]


def test_cluster_has_three_live_nodes(cluster):
    state, folder = cluster
    info = local.status(folder)
    assert info["running"] and info["ray_nodes_alive"] == 3
    assert state.dashboard_url.startswith("http://127.")  # dashboard and Jobs API on loopback only
    with pytest.raises(RuntimeError, match="still running"):
        local.up(workers=1, folder=folder)


def _registered_checkpoints(run: Path) -> list:
    """Checkpoints Ray Train's controller has registered (its snapshot file). A checkpoint_* folder appears
    before that: a node killed in between restarts the run from step 0, with nothing to resume from."""
    try:
        return json.loads((run / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def _train_worker_roles(state) -> list[str]:
    """The node (by role) of every live Ray Train worker: the node process it descends from (its raylet's)."""
    import psutil

    roles = {n["pid"]: n["role"] for n in state.nodes}
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in c for c in (p.info["cmdline"] or [])):
            try:  # a worker of another Ray (the test session's own) descends from none of them: left out
                found += [roles[a.pid] for a in p.parents() if a.pid in roles][:1]
            except psutil.NoSuchProcess:
                pass
    return sorted(found)


def test_training_job_spreads_over_two_nodes_and_survives_losing_one(cluster, tiny_model, tmp_path):
    """One submitted job: its two workers on the two worker nodes (SPREAD), then one node killed after the
    first checkpoint; the job restarts on the node left and finishes from that checkpoint. (Two jobs before:
    one for the placement, one for the fault; each job costs ~3 min of start-up here.)"""
    state, folder = cluster
    job = jobs.submit(_train_cmd(tiny_model, tmp_path, "fault", "train.max_steps=40", "train.eval_every_steps=10",
                                 "run.max_failures=2"), state.dashboard_url, working_dir=str(REPO))
    deadline = time.time() + 400
    while not _registered_checkpoints(tmp_path / "fault") and time.time() < deadline:
        assert jobs.wait(job, state.dashboard_url, timeout=0) not in jobs.TERMINAL
        time.sleep(0.5)
    assert _registered_checkpoints(tmp_path / "fault"), "no checkpoint before the deadline"
    assert _train_worker_roles(state) == ["worker1", "worker2"]
    local.kill_node(local.ClusterState.load(folder), "worker2")  # its raylet and the training worker on it
    status = jobs.wait(job, state.dashboard_url, timeout=600)
    logs = jobs.client(state.dashboard_url).get_job_logs(job)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "run folder:" in logs and "eval_loss" in logs
    saved = json.loads((tmp_path / "fault" / "history.json").read_text())
    assert saved["resumes"] and saved["resumes"][0] >= 10, saved["resumes"]  # restarted from a checkpoint
    assert saved["history"][-1]["step"] == 40
    nodes = saved["worker_nodes"]
    assert len(nodes) == 2 and len(set(nodes)) == 1, nodes  # the restarted group: two workers, worker1 alone
    assert (tmp_path / "fault" / "model" / "config.json").exists()


def test_state_folder_is_absolute_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("SQLRAY_CLUSTER_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert local.state_dir() == (Path.home() / ".sqlray" / "cluster").resolve()
    monkeypatch.setenv("SQLRAY_CLUSTER_DIR", "rel/state")
    assert local.state_dir().is_absolute()


def _sleeper():
    import subprocess

    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def test_down_never_signals_a_reused_pid(tmp_path):
    """A saved pid now belonging to another process (same pid, another start time) is left alone."""
    stranger = _sleeper()
    try:
        real = local._start_time(stranger.pid)
        local.ClusterState("127.0.0.2:1", "http://127.0.0.2:2",
                           [{"role": "head", "pid": stranger.pid, "start_time": real - 1, "log": ""}]).save(tmp_path)
        assert local.down(tmp_path, timeout=2) == []
        assert stranger.poll() is None, "a process that is not ours was killed"
        local.ClusterState("127.0.0.2:1", "http://127.0.0.2:2",
                           [{"role": "head", "pid": stranger.pid, "start_time": real, "log": ""}]).save(tmp_path)
        assert local.down(tmp_path, timeout=5) == ["head"]  # the same process, identity matching: ours
        assert stranger.wait(10) is not None
    finally:
        if stranger.poll() is None:
            stranger.kill()


def test_a_failed_up_stops_what_it_started(tmp_path):
    import psutil

    port = local.free_port()
    with pytest.raises((TimeoutError, RuntimeError)):
        local.up(workers=1, port=port, folder=tmp_path, timeout=0.01)  # too short for the head to listen
    time.sleep(1)
    left = [p for p in psutil.process_iter(["cmdline"]) if "--port" in (p.info["cmdline"] or [])
            and str(port) in (p.info["cmdline"] or []) and "start" in (p.info["cmdline"] or [])]
    assert not left, [p.info["cmdline"] for p in left]
    assert local.ClusterState.load(tmp_path) is None
