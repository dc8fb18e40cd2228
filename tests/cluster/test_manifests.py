"""Every file in cluster/ parses and validates: Ray's own launcher schema, a KubeRay schema held here,
the embedded Serve config, and the security rules (no public dashboard, Jobs API or client port)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "cluster").rglob("*.yaml"))
RAY_PORTS = {6379, 8265, 10001}

_CONTAINER = {
    "type": "object", "required": ["name", "image", "resources"],
    "properties": {
        "image": {"type": "string", "pattern": r"^[\w./-]+:[\w.-]+$", "not": {"pattern": ":latest$"}},
        "resources": {"type": "object", "required": ["requests", "limits"]},
    },
}
_POD = {"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["containers"],
    "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}}}}}
_CLUSTER_SPEC = {
    "type": "object", "required": ["rayVersion", "headGroupSpec"],
    "properties": {
        "rayVersion": {"const": "2.60.0"},
        "headGroupSpec": {"type": "object", "required": ["rayStartParams", "template"],
                          "properties": {"serviceType": {"enum": ["ClusterIP"]}, "template": _POD}},
        "workerGroupSpecs": {"type": "array", "items": {
            "type": "object", "required": ["groupName", "template", "minReplicas", "maxReplicas"],
            "properties": {"template": _POD}}},
    },
}
KUBERAY = {
    "RayCluster": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                   "properties": {"apiVersion": {"const": "ray.io/v1"}, "spec": _CLUSTER_SPEC}},
    "RayJob": {"type": "object", "required": ["apiVersion", "metadata", "spec"],
               "properties": {"apiVersion": {"const": "ray.io/v1"}, "spec": {
                   "type": "object", "required": ["entrypoint"],
                   "oneOf": [{"required": ["clusterSelector"]}, {"required": ["rayClusterSpec"]}],
                   "properties": {"entrypoint": {"type": "string", "pattern": "^sqlray "},
                                  "rayClusterSpec": _CLUSTER_SPEC}}}},
    "RayService": {"type": "object", "required": ["apiVersion", "metadata", "spec"],
                   "properties": {"apiVersion": {"const": "ray.io/v1"}, "spec": {
                       "type": "object", "required": ["serveConfigV2", "rayClusterConfig"],
                       "properties": {"serveConfigV2": {"type": "string"}, "rayClusterConfig": _CLUSTER_SPEC}}}},
    "NetworkPolicy": {"type": "object", "required": ["apiVersion", "metadata", "spec"],
                      "properties": {"apiVersion": {"const": "networking.k8s.io/v1"}}},
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_cluster_folder_has_every_definition():
    kinds = {d.get("kind") for p in FILES for d in _docs(p)}
    assert {"RayCluster", "RayJob", "RayService", "NetworkPolicy"} <= kinds
    assert any("available_node_types" in d for p in FILES for d in _docs(p))


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _check_private(doc: dict, where: str) -> None:
    for node in _walk(doc):
        if node.get("kind") == "Ingress" or node.get("type") in ("LoadBalancer", "NodePort"):
            raise AssertionError(f"{where}: exposes a Service/Ingress publicly")
        if node.get("serviceType") not in (None, "ClusterIP"):
            raise AssertionError(f"{where}: head serviceType {node['serviceType']}")
        for rule in node.get("IpPermissions", []):
            ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
            public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
            assert not (public and ports), f"{where}: security group opens {sorted(ports)[:3]}... to 0.0.0.0/0"
            assert not ports & RAY_PORTS, f"{where}: security group opens a Ray port {ports & RAY_PORTS}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_validates_and_keeps_ray_private(path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if "available_node_types" in doc:  # Ray cluster launcher: Ray's own schema
            schema = json.loads((Path(__import__("ray").__file__).parent / "autoscaler/ray-schema.json").read_text())
            jsonschema.validate(doc, schema)
            starts = " ".join(doc["head_start_ray_commands"])
            assert "--dashboard-host=127.0.0.1" in starts and "RAY_AUTH_MODE=token" in starts
            for t in doc["available_node_types"].values():
                assert t["resources"]
        else:
            assert doc["kind"] in KUBERAY, f"{path}: unexpected kind {doc['kind']}"
            jsonschema.validate(doc, KUBERAY[doc["kind"]])
            for c in (n for n in _walk(doc) if "image" in n and "env" in n):
                env = {e["name"]: e for e in c["env"]}
                assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env, f"{path}: no token auth"
        _check_private(doc, str(path.relative_to(REPO)))


def test_workers_request_gpus_and_serve_config_is_valid():
    from ray.serve.schema import ServeDeploySchema

    from sqlray.serving.config import ServeSettings

    for path in FILES:
        for doc in _docs(path):
            spec = doc.get("spec", {})
            cluster = spec.get("rayClusterConfig") or (spec if "headGroupSpec" in spec else None)
            for group in (cluster or {}).get("workerGroupSpecs", []):
                limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
                assert int(limits["nvidia.com/gpu"]) >= 1, f"{path}: worker group without a GPU"
            if doc.get("kind") == "RayService":
                for c in (n for n in _walk(doc) if "image" in n):  # Serve's HAProxy ingress on every node
                    assert {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"} in c["env"], f"{path}: no HAProxy"
                serve = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
                app = serve.applications[0]
                assert app.import_path == "sqlray.serving.app:build_app"
                ServeSettings.model_validate(app.args)
