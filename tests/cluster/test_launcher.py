"""cluster/launcher: Ray's own autoscaler schema, pre-created security groups, a scoped head profile,
shared storage, and an example command (and the reference configs) whose workers fit the node types."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema

from .kube import launcher, launcher_path, train_command

# ---- the cluster launcher ----------------------------------------------------------------------------

def test_launcher_validates_against_rays_schema():
    import ray

    doc = launcher()
    schema = json.loads((Path(ray.__file__).parent / "autoscaler/ray-schema.json").read_text())
    jsonschema.validate(doc, schema)
    starts = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts, "the dashboard/Jobs API must stay on the head's loopback"
    for cmds in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(doc[cmds]), f"{cmds}: no token auth"
    for t in doc["available_node_types"].values():
        assert t["resources"]


def test_launcher_uses_precreated_security_groups_and_a_scoped_head_profile():
    doc = launcher()
    assert "security_group" not in doc["provider"], \
        "provider.security_group: Ray creates that group itself and adds SSH from 0.0.0.0/0 whatever it says"
    groups = set()
    for name, t in doc["available_node_types"].items():
        sgs = t["node_config"].get("SecurityGroupIds")
        assert sgs and all(re.fullmatch(r"sg-[0-9a-zA-Z_]+", s) for s in sgs), \
            f"{name}: no SecurityGroupIds, so Ray would create a group open to SSH from anywhere"
        groups.add(tuple(sgs))
    assert len(groups) == 1, "head and workers must share the group (all traffic allowed within it)"
    head = doc["available_node_types"][doc["head_node_type"]]["node_config"]
    assert head.get("IamInstanceProfile"), \
        "no head IamInstanceProfile: Ray would create ray-autoscaler-v1 with EC2FullAccess and S3FullAccess"


def _example_train() -> list[str]:
    lines = [ln for ln in launcher_path().read_text().splitlines() if ln.startswith("#") and "-- sqlray train" in ln]
    assert len(lines) == 1, "the launcher file documents one example `sqlray submit ... -- sqlray train ...`"
    return shlex.split(lines[0].split(" -- ", 1)[1])


def test_launcher_example_fits_its_node_types_on_shared_storage():
    doc = launcher()
    cfg, _ = train_command(_example_train())
    need = {"CPU": cfg.scaling.cpus_per_worker, "GPU": 1.0 if cfg.scaling.use_gpu else 0.0}
    capacity, budget = 0, doc["max_workers"]
    for name, t in doc["available_node_types"].items():
        per_node = min(int(t["resources"].get(k, 0) // v) for k, v in need.items() if v)
        count = 1 if name == doc["head_node_type"] else min(t.get("max_workers", budget), budget)
        capacity += per_node * count
    assert capacity >= cfg.scaling.num_workers, \
        f"{cfg.scaling.num_workers} workers x {need} fit nowhere: room for {capacity} on {list(doc['available_node_types'])}"
    storage = cfg.run.storage_path
    if storage.startswith("s3://"):
        for name, t in doc["available_node_types"].items():
            assert t["node_config"].get("IamInstanceProfile"), f"{name}: writes {storage} without an instance profile"
    else:
        assert storage.startswith("/"), f"run.storage_path={storage}: each node would write its own disk"
        setup = " ".join(doc.get("setup_commands", []))  # every node, head and workers
        mounts = re.findall(r"\bmount\b[^;&|]*?\s(/[^\s)]+)\)?(?:\s|$)", setup)
        assert any(storage == m or storage.startswith(m.rstrip("/") + "/") for m in mounts), \
            f"run.storage_path={storage} is not under a file system setup_commands mounts on every node ({mounts})"


# ---- the reference configs against the node types -----------------------------------------------------

def test_reference_configs_fit_a_launcher_gpu_worker():
    doc = launcher()
    gpu_nodes = [t["resources"] for t in doc["available_node_types"].values() if t["resources"].get("GPU")]
    for name in ("yi-ko-6b-qlora.yaml", "open-solar-ko-10.7b-qlora.yaml"):
        cfg, _ = train_command(["sqlray", "train", "--config", f"configs/{name}"])
        assert any(r["CPU"] >= cfg.scaling.cpus_per_worker for r in gpu_nodes), \
            f"{name}: cpus_per_worker={cfg.scaling.cpus_per_worker} exceeds every GPU node type"
