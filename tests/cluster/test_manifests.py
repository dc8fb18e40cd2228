"""The cluster definitions in cluster/ are deployable as written, checked without a cluster:

- cluster/kuberay: every object the kustomization applies validates strictly (unknown fields are errors)
  against the KubeRay v1.7.0 CRDs vendored in tests/cluster/crds, core objects against strict schemas here;
  then one check per deployment rule: token auth through the operator, the NetworkPolicy simulated on the
  labels the operator sets, references resolved inside the kustomization, no deprecated fields, GPU
  tolerations, the RayJob's run fitting its workers on shared storage, the Serve app and its API key.
- cluster/launcher: Ray's own autoscaler schema, pre-created security groups, a scoped head profile, shared
  storage and an example command whose workers fit the node types.
- Dockerfile/Makefile: a pinned base image and one image name everywhere.

Operator facts used here come from ray-project/kuberay v1.7.0 (file paths in the comments)."""
from __future__ import annotations

import copy
import fnmatch
import functools
import gzip
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO  # the tree under test; a mutation check points it at a modified copy
CRDS = Path(__file__).resolve().parent / "crds"
KUBERAY_VERSION = "v1.7.0"
RAY_PORTS = {6379, 8265, 10001}
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# ---- operator facts (ray-project/kuberay v1.7.0) ------------------------------------------------------
AUTH_SECRET_KEY = "auth_token"          # ray-operator/controllers/ray/utils/constant.go RAY_AUTH_TOKEN_SECRET_KEY
MIN_TOKEN_AUTH_RAY = (2, 52, 0)         # ray-operator/controllers/ray/utils/validation.go ValidateRayClusterSpec
OPERATOR_CREATED_BY = {"app.kubernetes.io/created-by": "kuberay-operator"}   # utils/constant.go ComponentName
# helm-chart/kuberay-operator/templates/deployment.yaml (release "kuberay-operator") and the kustomize
# install's ray-operator/config/manager/manager.yaml: the two label sets an operator pod carries.
OPERATOR_POD_LABELS = [
    {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator",
     "app.kubernetes.io/component": "kuberay-operator"},
    {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": "kuberay-operator"},
]
OPERATOR_NAMESPACE = "kuberay-operator"
# Deprecated and unused (apis/ray/v1/rayservice_types.go, rayjob_types.go "Deprecated:").
DEPRECATED = {"RayService": [("spec", "serviceUnhealthySecondThreshold"), ("spec", "deploymentUnhealthySecondThreshold")],
              "RayJob": [("spec", "deletionStrategy", "onSuccess"), ("spec", "deletionStrategy", "onFailure")]}
INIT_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"   # utils/constant.go RayServiceInitializingTimeoutAnnotation
MAX_NAME = {"RayCluster": 53, "RayService": 47, "RayJob": 47}   # utils/constant.go Max*NameLength
GPU = "nvidia.com/gpu"
CLIENT_NS_LABEL = {"sqlray.io/client": "true"}


# ---- loading -----------------------------------------------------------------------------------------

def _kuberay() -> Path:
    return ROOT / "cluster" / "kuberay"


def _launcher_path() -> Path:
    return ROOT / "cluster" / "launcher" / "aws-gpu.yaml"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d]


def _kustomization() -> dict:
    return yaml.load((_kuberay() / "kustomization.yaml").read_text(), Loader=_Loader)


def _env_keys(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _generated_secrets(kz: dict) -> list[dict]:
    """The Secrets kustomize generates, with the keys of the committed *.env.example beside each env file."""
    out = []
    for gen in kz.get("secretGenerator", []):
        assert not gen.get("literals") and not gen.get("files"), \
            f"secretGenerator {gen['name']}: literals/files put secret values in git; use envs files"
        data = {}
        for env in gen.get("envs", []):
            example = _kuberay() / f"{env}.example"
            assert example.exists(), f"secretGenerator {gen['name']}: {env}.example (the template) is missing"
            data.update(_env_keys(example))
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "stringData": data})
    return out


def _apply_images(doc: dict, images: list[dict]) -> dict:
    """kustomize's `images` transformer (it rewrites every containers[].image, CRDs included)."""
    doc = copy.deepcopy(doc)
    for c in _containers(doc):
        name, _, tag = c["image"].rpartition(":")
        for rule in images:
            if rule["name"] == name:
                c["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return doc


def _objects() -> list[tuple[str, dict]]:
    """Everything `kubectl apply -k cluster/kuberay` creates, as (source, object)."""
    kz = _kustomization()
    out = []
    for res in kz["resources"]:
        for d in _docs(_kuberay() / res):
            out.append((res, _apply_images(d, kz.get("images", []))))
    out += [("kustomization.yaml secretGenerator", s) for s in _generated_secrets(kz)]
    return out


def _of_kind(kind: str) -> list[dict]:
    return [d for _, d in _objects() if d["kind"] == kind]


def _launcher() -> dict:
    return yaml.load(_launcher_path().read_text(), Loader=_Loader)


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _containers(doc: dict) -> list[dict]:
    return [c for n in _walk(doc) for key in ("containers", "initContainers") if isinstance(n.get(key), list)
            for c in n[key]]


def _clusters(doc: dict) -> list[dict]:
    """Every Ray cluster definition in an object: RayCluster.spec, RayService.spec.rayClusterConfig,
    RayJob.spec.rayClusterSpec."""
    spec = doc.get("spec", {})
    return [c for c in (spec if doc["kind"] == "RayCluster" else None, spec.get("rayClusterConfig"),
                        spec.get("rayClusterSpec")) if c]


def _groups(cluster: dict) -> list[tuple[str, dict, dict]]:
    """(kind, group spec, pod template) for the head and every worker group."""
    return [("head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"])] + \
        [("worker", g, g["template"]) for g in cluster.get("workerGroupSpecs", [])]


def _quantity(q) -> float:
    q = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for u in sorted(units, key=len, reverse=True):
        if q.endswith(u):
            return float(q[: -len(u)]) * units[u]
    return float(q)


def _ray_resources(kind: str, group: dict, template: dict) -> dict[str, float]:
    """What Ray sees on a pod: rayStartParams win, else the Ray container's limits (KubeRay's rule)."""
    limits = template["spec"]["containers"][0]["resources"].get("limits", {})
    params = group.get("rayStartParams", {})
    cpu = float(params["num-cpus"]) if "num-cpus" in params else _quantity(limits.get("cpu", 0))
    gpu = float(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get(GPU, 0))
    return {"CPU": cpu, "GPU": gpu}


def _go_duration_s(text: str) -> float:
    """The operator's validateInitializingTimeout: a Go duration ("15m", "900s") or integer seconds."""
    if re.fullmatch(r"[0-9]+", text):
        return float(text)
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"{text!r} is not a Go duration or seconds"
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(a) * scale[b] for a, b in parts)


# ---- strict schemas ----------------------------------------------------------------------------------

def _strict(schema):
    """The CRD's structural schema as the API server applies it with field validation Strict: unknown
    fields are errors (additionalProperties: false wherever properties are listed and unknown fields are
    not preserved), int-or-string is integer or string."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = {k: _strict(v) if k in ("items", "not", "anyOf", "allOf", "oneOf") else v for k, v in schema.items()}
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _strict(s["additionalProperties"])
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable"):
        s["type"] = [s["type"], "null"] if isinstance(s.get("type"), str) else s.get("type")
    return s


def _list_type(validator, list_type, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set" and len({json.dumps(i, sort_keys=True) for i in instance}) != len(instance):
        yield jsonschema.ValidationError(f"x-kubernetes-list-type=set with duplicates: {instance}")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = schema.get("items", {}).get("properties", {})
        seen = set()
        for item in instance:
            k = tuple(item.get(key, props.get(key, {}).get("default")) for key in keys)
            if k in seen:
                yield jsonschema.ValidationError(f"x-kubernetes-list-type=map: duplicate {dict(zip(keys, k))}")
            seen.add(k)


def _cel(validator, rules, instance, schema):
    # The API server evaluates these CEL rules; this test cannot. None of the manifests sets such a field
    # today: anyone who does gets this error and checks the rules by hand.
    yield jsonschema.ValidationError(f"a field with CEL rules is set; check them by hand: {[r['rule'] for r in rules]}")


def _format(validator, fmt, instance, schema):
    bits = {"int32": 31, "int64": 63}.get(fmt)
    if bits and validator.is_type(instance, "integer") and not -(2**bits) <= instance < 2**bits:
        yield jsonschema.ValidationError(f"{instance} overflows {fmt}")


StrictValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel, "format": _format})

_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": {"type": "string", "pattern": _DNS1123, "maxLength": 253}, "namespace": {"type": "string"},
    "labels": _STRING_MAP, "annotations": _STRING_MAP}}


@functools.cache
def _crd(kind: str) -> dict:
    doc = yaml.load(gzip.decompress((CRDS / f"ray.io_{kind.lower()}s.yaml.gz").read_bytes()), Loader=_Loader)
    assert doc["spec"]["names"]["kind"] == kind
    return doc


@functools.cache
def _crd_schema(kind: str) -> dict:
    (version,) = [v for v in _crd(kind)["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = _OBJECT_META
    schema["properties"]["apiVersion"] = {"enum": ["ray.io/v1"]}
    schema["properties"]["kind"] = {"enum": [kind]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"].pop("status")
    return schema


@functools.cache
def _core_schemas() -> dict[str, dict]:
    """Strict schemas for the core kinds in the kustomization. The NetworkPolicy rule and label selector
    schemas are Kubernetes' own networking/v1 types as the RayCluster CRD embeds them (spec.networkPolicy)."""
    np = _crd_schema("RayCluster")["properties"]["spec"]["properties"]["networkPolicy"]["properties"]
    ingress_rule = np["head"]["properties"]["ingressRules"]["items"]
    selector = ingress_rule["properties"]["from"]["items"]["properties"]["podSelector"]
    meta = _OBJECT_META
    quantity = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^[0-9.]+([KMGTPE]i?|m|k)?$"}]}

    def obj(api, kind, spec):
        return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata"],
                "properties": {"apiVersion": {"enum": [api]}, "kind": {"enum": [kind]}, "metadata": meta, **spec}}

    return {
        "NetworkPolicy": obj("networking.k8s.io/v1", "NetworkPolicy", {"spec": {
            "type": "object", "additionalProperties": False, "required": ["podSelector"], "properties": {
                "podSelector": selector, "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                "ingress": {"type": "array", "items": ingress_rule}}}}),
        "PersistentVolumeClaim": obj("v1", "PersistentVolumeClaim", {"spec": {
            "type": "object", "additionalProperties": False, "required": ["accessModes", "resources"], "properties": {
                "accessModes": {"type": "array", "minItems": 1, "items": {
                    "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
                "storageClassName": {"type": "string"}, "volumeMode": {"enum": ["Filesystem", "Block"]},
                "resources": {"type": "object", "additionalProperties": False, "required": ["requests"], "properties": {
                    "requests": {"type": "object", "additionalProperties": False, "required": ["storage"],
                                 "properties": {"storage": quantity}}}}}}}),
        "Secret": obj("v1", "Secret", {"type": {"type": "string"}, "data": _STRING_MAP, "stringData": _STRING_MAP}),
    }


def _validate(doc: dict, where: str) -> None:
    kind = doc.get("kind")
    schema = _crd_schema(kind) if kind in RAY_KINDS else _core_schemas().get(kind)
    assert schema is not None, f"{where}: no schema for kind {kind}"
    errors = sorted(StrictValidator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}: {kind} {doc['metadata'].get('name')}:\n" + "\n".join(
        f"  {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors[:20])


# ---- the kustomization -------------------------------------------------------------------------------

def test_kustomization_applies_every_manifest_and_keeps_secrets_out_of_git():
    kz = _kustomization()
    assert kz["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kz["kind"] == "Kustomization"
    listed = set(kz["resources"])
    present = {p.name for p in _kuberay().glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization resources {sorted(listed)} != manifests {sorted(present)}"
    kinds = {d["kind"] for _, d in _objects()}
    assert {"RayCluster", "RayJob", "RayService", "NetworkPolicy", "PersistentVolumeClaim", "Secret"} <= kinds
    assert kz.get("generatorOptions", {}).get("disableNameSuffixHash") is True, \
        "generated Secret names get a hash suffix kustomize does not write into authOptions.secretName"
    ignored = [ln.strip() for ln in (_kuberay() / ".gitignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    docker_ignored = (ROOT / ".dockerignore").read_text().split()
    for gen in kz.get("secretGenerator", []):
        for env in gen.get("envs", []):
            assert any(fnmatch.fnmatch(env, pat) for pat in ignored), f"{env} (secret values) is not gitignored"
            assert f"cluster/kuberay/{env}" in docker_ignored or "cluster/kuberay/*.env" in docker_ignored, \
                f"{env} (secret values) would be copied into the image"
            assert set(_env_keys(_kuberay() / f"{env}.example").values()) == {"REPLACE_ME"}, \
                f"{env}.example must hold placeholders only"
    for src, d in _objects():  # a hand-written Secret in resources would put values in git
        if d["kind"] == "Secret" and src != "kustomization.yaml secretGenerator":
            values = {**d.get("stringData", {}), **d.get("data", {})}
            assert set(values.values()) <= {"REPLACE_ME"}, f"{src}: Secret {d['metadata']['name']} holds values"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayService", "NetworkPolicy",
                                  "PersistentVolumeClaim", "Secret"])
def test_objects_validate_strictly(kind):
    docs = [(src, d) for src, d in _objects() if d["kind"] == kind]
    assert docs, f"no {kind} in the kustomization"
    for src, d in docs:
        _validate(d, src)
        if kind in MAX_NAME:
            assert len(d["metadata"]["name"]) <= MAX_NAME[kind], f"{src}: name longer than the operator allows"


def test_strict_validation_rejects_unknown_and_mistyped_fields():
    """The validator itself: a misspelt field, a field at the wrong level, a wrong type and a duplicate
    list-map key are all errors (the CRD alone, without strictness, would accept the first two)."""
    cluster = _of_kind("RayCluster")[0]
    _validate(cluster, "as written")
    bad = []
    d = copy.deepcopy(cluster); d["spec"]["authOptions"]["secretname"] = "x"; bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["tolerations"] = []; bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"; bad.append(d)
    d = copy.deepcopy(cluster); c = d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    c["ports"].append(dict(c["ports"][0])); bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["managedBy"] = "someone"; bad.append(d)
    for d in bad:
        with pytest.raises(AssertionError):
            _validate(d, "mutated")


def _check_private(doc: dict, where: str) -> None:
    for node in _walk(doc):
        if node.get("kind") == "Ingress" or node.get("type") in ("LoadBalancer", "NodePort"):
            raise AssertionError(f"{where}: exposes a Service/Ingress publicly")
        if node.get("serviceType") not in (None, "ClusterIP"):
            raise AssertionError(f"{where}: head serviceType {node['serviceType']}")
        if node.get("enableIngress"):
            raise AssertionError(f"{where}: head Ingress enabled")
        for rule in node.get("IpPermissions", []):
            ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
            public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
            assert not (public and ports), f"{where}: security group opens {sorted(ports)[:3]}... to 0.0.0.0/0"
            assert not ports & RAY_PORTS, f"{where}: security group opens a Ray port {ports & RAY_PORTS}"


def test_nothing_is_exposed_publicly():
    for src, d in _objects():
        _check_private(d, src)
    _check_private(_launcher(), "launcher")


# ---- token auth --------------------------------------------------------------------------------------

def test_token_auth_through_the_operator_on_every_cluster():
    secrets = {s["metadata"]["name"]: s for s in _of_kind("Secret")}
    found = 0
    for src, d in _objects():
        for cluster in _clusters(d):
            found += 1
            where = f"{src}: {d['kind']} {d['metadata']['name']}"
            auth = cluster.get("authOptions") or {}
            assert auth.get("mode") == "token", f"{where}: authOptions.mode is not token"
            assert not auth.get("enableK8sTokenAuth"), f"{where}: K8s token auth is unsupported for RayJob/RayService"
            name = auth.get("secretName")
            assert name in secrets, f"{where}: authOptions.secretName {name!r} is not a Secret of the kustomization"
            keys = {**secrets[name].get("stringData", {}), **secrets[name].get("data", {})}
            assert AUTH_SECRET_KEY in keys, f"{where}: Secret {name} has no key {AUTH_SECRET_KEY} (KubeRay reads that)"
            version = tuple(int(x) for x in cluster["rayVersion"].split("."))
            assert version >= MIN_TOKEN_AUTH_RAY, f"{where}: token auth needs Ray >= 2.52.0"
    assert found >= 2
    # The operator injects RAY_AUTH_MODE/RAY_AUTH_TOKEN into Ray containers and the submitter and skips a
    # container that already has them (common/pod.go SetContainerTokenAuthEnvVars): hand-made ones would
    # shadow its Secret reference.
    for src, d in _objects():
        for c in _containers(d):
            names = {e["name"] for e in c.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, f"{src}: {c['name']} sets the token env itself"


def test_rayjob_targets_a_token_cluster_of_the_kustomization():
    clusters = {c["metadata"]["name"]: c for c in _of_kind("RayCluster")}
    for job in _of_kind("RayJob"):
        sel = job["spec"].get("clusterSelector")
        if sel:  # the submitter gets its token from the selected cluster's authOptions
            assert set(sel) == {"ray.io/cluster"} and sel["ray.io/cluster"] in clusters, \
                f"RayJob {job['metadata']['name']}: clusterSelector {sel} names no RayCluster here"
            assert not job["spec"].get("shutdownAfterJobFinishes"), "shutdownAfterJobFinishes needs rayClusterSpec"
        else:
            assert job["spec"].get("rayClusterSpec"), "RayJob with neither clusterSelector nor rayClusterSpec"


# ---- NetworkPolicy, simulated --------------------------------------------------------------------------

NAMESPACE = "team-ml"


def _ns(name: str, **labels) -> dict:
    return {"kubernetes.io/metadata.name": name, **labels}  # the API server sets the name label itself


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, vals = e["key"], e["operator"], e.get("values", [])
        ok = {"In": labels.get(key) in vals, "NotIn": key not in labels or labels[key] not in vals,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict, src: dict) -> bool:
    if "ipBlock" in peer:
        return True  # pod IPs are not modelled: an ipBlock counts as admitting anyone
    ns_ok = (src["ns"] == NAMESPACE) if "namespaceSelector" not in peer else _selects(peer["namespaceSelector"], src["ns_labels"])
    pod_ok = "podSelector" not in peer or _selects(peer["podSelector"], src["labels"])
    return ns_ok and pod_ok


def _port_matches(rule_ports: list | None, port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        assert not isinstance(p.get("port"), str), f"named port {p['port']}: use numbers so the policy reads unambiguously"
        if "port" not in p or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _admitted(policies: list[dict], dst_labels: dict, src: dict, port: int) -> bool:
    """Kubernetes NetworkPolicy semantics for ingress to a pod of NAMESPACE."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], dst_labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    return any(_port_matches(rule.get("ports"), port)
               and (not rule.get("from") or any(_peer_admits(peer, src) for peer in rule["from"]))
               for p in selecting for rule in p["spec"].get("ingress", []))


def _ray_pod_labels() -> list[tuple[str, dict]]:
    """Labels of every Ray pod the manifests make (common/pod.go labelPod: the operator's labels, the
    template's on top except cluster, node type and group)."""
    out = []
    for _, d in _objects():
        for cluster in _clusters(d):
            name = d["metadata"]["name"] if d["kind"] == "RayCluster" else f"{d['metadata']['name']}-raycluster-x1y2z"
            for kind, group, template in _groups(cluster):
                gname = "headgroup" if kind == "head" else group["groupName"]
                labels = {"ray.io/is-ray-node": "yes", "ray.io/cluster": name, "ray.io/node-type": kind,
                          "ray.io/group": gname, "ray.io/identifier": f"{name}-{kind}",
                          "app.kubernetes.io/name": "kuberay", **OPERATOR_CREATED_BY}
                user = dict(template.get("metadata", {}).get("labels", {}))
                for k in ("ray.io/cluster", "ray.io/node-type", "ray.io/group"):
                    user.pop(k, None)
                out.append((f"{d['kind']} {d['metadata']['name']} {gname}", {**labels, **user}))
    return out


def _submitter_labels(job: dict) -> dict:
    """rayjob_controller.go getSubmitterTemplate: the template's labels plus the operator's three."""
    template = job["spec"].get("submitterPodTemplate", {})
    return {**template.get("metadata", {}).get("labels", {}),
            "ray.io/originated-from-cr-name": job["metadata"]["name"],
            "ray.io/originated-from-crd": "RayJob", **OPERATOR_CREATED_BY}


def _src(labels: dict, ns: str, **ns_labels) -> dict:
    return {"labels": labels, "ns": ns, "ns_labels": _ns(ns, **ns_labels)}


def test_networkpolicy_admits_exactly_ray_operator_submitters_and_clients():
    policies = _of_kind("NetworkPolicy")
    pods = _ray_pod_labels()
    assert len(pods) >= 4
    stranger = _src({"app": "anything"}, "other-team")
    for where, dst in pods:
        assert any(_selects(p["spec"]["podSelector"], dst) for p in policies), f"{where}: no policy selects it"
        # Ray pods among themselves, every port (GCS, dashboard, client, raylet/object ports, Serve replicas).
        for _, peer in pods:
            for port in (6379, 8265, 10001, 8000, 30000, 45678):
                assert _admitted(policies, dst, _src(peer, NAMESPACE), port), f"{where}: Ray pod refused on {port}"
        # Nobody else on GCS or the client port.
        for port in (6379, 10001):
            for src in [stranger, _src({"app": "x"}, NAMESPACE), _src(OPERATOR_POD_LABELS[0], OPERATOR_NAMESPACE),
                        _src({"app": "x"}, "clients", **CLIENT_NS_LABEL)]:
                assert not _admitted(policies, dst, src, port), f"{where}: {src} admitted on {port}"
        # An arbitrary pod of another, unlabelled namespace: nothing.
        for port in (8000, 8265, 6379, 10001, 30000):
            assert not _admitted(policies, dst, stranger, port), f"{where}: a foreign pod admitted on {port}"
        # An arbitrary pod of this namespace: not the dashboard/Jobs API, not Serve.
        for port in (8265, 8000):
            assert not _admitted(policies, dst, _src({"app": "x"}, NAMESPACE), port), f"{where}: any local pod on {port}"
        # The operator, from its namespace only, on the dashboard and Serve.
        for labels in OPERATOR_POD_LABELS:
            for port in (8265, 8000):
                assert _admitted(policies, dst, _src(labels, OPERATOR_NAMESPACE), port), f"{where}: operator refused on {port}"
                assert not _admitted(policies, dst, _src(labels, "default"), port), f"{where}: operator look-alike on {port}"
                assert not _admitted(policies, dst, _src({"app": "x"}, OPERATOR_NAMESPACE), port), \
                    f"{where}: any pod of the operator's namespace admitted on {port}"
        # A pod that merely carries the operator's created-by label is neither a Ray pod nor a submitter.
        assert not _admitted(policies, dst, _src(dict(OPERATOR_CREATED_BY), NAMESPACE), 8265), \
            f"{where}: a pod labelled created-by=kuberay-operator alone admitted on 8265"
        # Clients: port 8000 from a labelled namespace, nothing else.
        client = _src({"app": "x"}, "clients", **CLIENT_NS_LABEL)
        assert _admitted(policies, dst, client, 8000), f"{where}: labelled client namespace refused on 8000"
        assert not _admitted(policies, dst, client, 8265), f"{where}: client namespace admitted on 8265"
    jobs = _of_kind("RayJob")
    assert jobs
    for job in jobs:
        submitter = _submitter_labels(job)
        heads = [dst for where, dst in pods if dst["ray.io/node-type"] == "head"]
        for dst in heads:
            assert _admitted(policies, dst, _src(submitter, NAMESPACE), 8265), "RayJob submitter refused on 8265"
            assert not _admitted(policies, dst, _src(submitter, NAMESPACE), 6379), "RayJob submitter admitted on 6379"
            assert not _admitted(policies, dst, _src(submitter, "other-team"), 8265), "foreign submitter on 8265"


def test_networkpolicy_has_no_wildcard_peer():
    for p in _of_kind("NetworkPolicy"):
        assert p["spec"]["podSelector"], "an empty podSelector would put every pod of the namespace behind it"
        for rule in p["spec"].get("ingress", []):
            assert rule.get("from"), f"{p['metadata']['name']}: a rule without `from` admits every source"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, "ipBlock peers: pod traffic is matched by labels here"
                for key in ("namespaceSelector", "podSelector"):
                    if key in peer:
                        sel = peer[key]
                        assert sel.get("matchLabels") or sel.get("matchExpressions"), \
                            f"{p['metadata']['name']}: `{key}: {{}}` matches everything"


# ---- references --------------------------------------------------------------------------------------

def _references(doc: dict) -> list[tuple[str, str, str | None]]:
    """(kind, name, key) of every Secret, ConfigMap and PVC an object uses."""
    out = []
    for n in _walk(doc):
        if "secretKeyRef" in n:
            out.append(("Secret", n["secretKeyRef"]["name"], n["secretKeyRef"].get("key")))
        if "configMapKeyRef" in n:
            out.append(("ConfigMap", n["configMapKeyRef"]["name"], n["configMapKeyRef"].get("key")))
        if isinstance(n.get("secretRef"), dict):
            out.append(("Secret", n["secretRef"]["name"], None))
        if isinstance(n.get("configMapRef"), dict):
            out.append(("ConfigMap", n["configMapRef"]["name"], None))
        if isinstance(n.get("secret"), dict) and "secretName" in n["secret"]:
            out.append(("Secret", n["secret"]["secretName"], None))
        if isinstance(n.get("configMap"), dict) and "name" in n["configMap"]:
            out.append(("ConfigMap", n["configMap"]["name"], None))
        if isinstance(n.get("persistentVolumeClaim"), dict):
            out.append(("PersistentVolumeClaim", n["persistentVolumeClaim"]["claimName"], None))
        if "imagePullSecrets" in n:
            out += [("Secret", s["name"], None) for s in n["imagePullSecrets"]]
    for cluster in _clusters(doc):
        if cluster.get("authOptions", {}).get("secretName"):
            out.append(("Secret", cluster["authOptions"]["secretName"], AUTH_SECRET_KEY))
    return out


def test_every_referenced_secret_configmap_and_claim_is_in_the_kustomization():
    defined = {(d["kind"], d["metadata"]["name"]): d for _, d in _objects()}
    refs = [(src, r) for src, d in _objects() for r in _references(d)]
    assert {r[0] for _, r in refs} >= {"Secret", "PersistentVolumeClaim"}
    for src, (kind, name, key) in refs:
        assert (kind, name) in defined, f"{src}: {kind} {name} is used but not defined in the kustomization"
        if key:
            obj = defined[(kind, name)]
            assert key in {**obj.get("data", {}), **obj.get("stringData", {})}, f"{src}: {kind} {name} has no key {key}"


# ---- RayService --------------------------------------------------------------------------------------

def test_no_deprecated_fields_and_rayservice_initializing_timeout():
    for src, d in _objects():
        for path in DEPRECATED.get(d["kind"], []):
            node = d
            for p in path[:-1]:
                node = node.get(p, {})
            assert path[-1] not in node, f"{src}: {'.'.join(path)} is deprecated and unused by the operator"
    for svc in _of_kind("RayService"):
        timeout = svc["metadata"].get("annotations", {}).get(INIT_TIMEOUT_ANNOTATION)
        assert timeout, f"RayService: no {INIT_TIMEOUT_ANNOTATION} annotation"
        assert 600 <= _go_duration_s(timeout) <= 7200, f"{timeout}: loading a 6B model takes minutes, not hours"


def test_gpu_pods_tolerate_the_gpu_taint():
    gpu_tolerations = []
    for src, d in _objects():
        for cluster in _clusters(d):
            for kind, group, template in _groups(cluster):
                res = template["spec"]["containers"][0]["resources"]
                gpus = _quantity(res.get("limits", {}).get(GPU, 0))
                assert _quantity(res.get("requests", {}).get(GPU, gpus)) == gpus, \
                    f"{src}: GPU requests and limits must be equal"
                tol = [t for t in template["spec"].get("tolerations", []) if t.get("key") == GPU]
                if gpus:
                    assert tol, f"{src}: {d['kind']} {kind} {group.get('groupName', '')} requests GPUs, no {GPU} toleration"
                    gpu_tolerations.append(tol)
                else:
                    assert not tol, f"{src}: a CPU pod tolerating the GPU taint would take GPU nodes"
    assert len(gpu_tolerations) >= 2 and all(t == gpu_tolerations[0] for t in gpu_tolerations), \
        f"GPU tolerations differ between definitions: {gpu_tolerations}"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in gpu_tolerations[0]


def test_serve_app_api_key_and_haproxy():
    from ray.serve.schema import ServeDeploySchema
    from sqlray.serving.config import ServeSettings

    services = _of_kind("RayService")
    assert services
    for svc in services:
        serve = ServeDeploySchema.model_validate(yaml.safe_load(svc["spec"]["serveConfigV2"]))
        (app,) = serve.applications
        assert app.import_path == "sqlray.serving.app:build_app"
        settings = ServeSettings.model_validate(app.args)
        assert settings.api_key_env, "the Serve app has no API key"
        assert settings.api_key_env not in svc["spec"]["serveConfigV2"].replace(f"api_key_env: {settings.api_key_env}", ""), \
            "the API key variable appears in the Serve config (runtime_env shows in the dashboard)"
        assert not (app.runtime_env or {}).get("env_vars"), "env_vars in runtime_env show in the dashboard"
        cluster = svc["spec"]["rayClusterConfig"]
        for c in _containers(cluster):  # Serve's HAProxy ingress on every node
            assert {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"} in c.get("env", []), f"{c['name']}: no HAProxy"
        hosts = 0
        for kind, group, template in _groups(cluster):
            res = _ray_resources(kind, group, template)
            if res["GPU"] < settings.num_gpus or res["CPU"] < settings.num_cpus:
                continue  # cannot host a replica
            hosts += 1
            env = {e["name"]: e for e in template["spec"]["containers"][0].get("env", [])}
            ref = env.get(settings.api_key_env, {}).get("valueFrom", {}).get("secretKeyRef")
            assert ref, f"{kind} {group.get('groupName')}: replicas here get no {settings.api_key_env} from a Secret"
            assert "value" not in env[settings.api_key_env], "the API key is written into the manifest"
        assert hosts, "no group of the RayService can host a replica"


# ---- the training job --------------------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip() if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _workdir() -> str:
    return [arg for op, arg in _dockerfile() if op == "WORKDIR"][-1]


def _train_command(argv: list[str], base: Path | None = None):
    """(config, overrides) of a `sqlray train --config X k=v ...` command line."""
    from sqlray.training.config import load_config

    assert argv[:2] == ["sqlray", "train"], f"not a sqlray train command: {argv}"
    i = argv.index("--config")
    path, overrides = argv[i + 1], [a for a in argv[2:i] + argv[i + 2:] if "=" in a]
    local = ROOT / Path(path).relative_to(base) if base else ROOT / path
    assert local.exists(), f"{path}: no such config in the repository ({local})"
    return load_config(local, overrides), path


def _pvc_mount(template: dict, path: str) -> tuple[str, bool] | None:
    """(claim, read-only) of the PVC mounted at or above ``path`` in the Ray container."""
    spec = template["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
              if "persistentVolumeClaim" in v}
    for m in spec["containers"][0].get("volumeMounts", []):
        if m["name"] in claims and (path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")):
            return claims[m["name"]], bool(m.get("readOnly"))
    return None


def test_rayjob_run_fits_its_cluster_and_checkpoints_on_shared_storage():
    clusters = {c["metadata"]["name"]: c["spec"] for c in _of_kind("RayCluster")}
    claims = {c["metadata"]["name"]: c for c in _of_kind("PersistentVolumeClaim")}
    for job in _of_kind("RayJob"):
        entry = job["spec"]["entrypoint"]
        assert entry.startswith("sqlray "), "the entrypoint runs sqlray's CLI"
        assert "runtimeEnvYAML" not in job["spec"] or "working_dir" not in job["spec"]["runtimeEnvYAML"], \
            "sqlray is installed in the image; a working_dir upload would put the repo's folders on sys.path"
        cfg, path = _train_command(shlex.split(entry), base=Path(_workdir()))
        assert path.startswith(_workdir().rstrip("/") + "/"), f"{path}: not under the image's {_workdir()}"
        cluster = job["spec"].get("rayClusterSpec") or clusters[job["spec"]["clusterSelector"]["ray.io/cluster"]]
        storage = cfg.run.storage_path
        assert storage.startswith("/") and "://" not in storage, f"run.storage_path={storage}: not a shared mount"
        used = set()
        for kind, group, template in _groups(cluster):
            mount = _pvc_mount(template, storage)
            assert mount and not mount[1], f"{kind} {group.get('groupName', '')}: {storage} is not a writable PVC mount"
            used.add(mount[0])
        assert len(used) == 1, f"head and workers mount different claims at {storage}: {used}"
        (claim,) = used
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim}: not ReadWriteMany"
        # Ray Train's workers: num_workers bundles of {CPU: cpus_per_worker, GPU: 1 if use_gpu}.
        need = {"CPU": cfg.scaling.cpus_per_worker, "GPU": 1.0 if cfg.scaling.use_gpu else 0.0}
        capacity = 0
        for kind, group, template in _groups(cluster):
            res = _ray_resources(kind, group, template)
            per_pod = min(int(res[k] // v) for k, v in need.items() if v)
            capacity += per_pod * (1 if kind == "head" else group["maxReplicas"])
        assert capacity >= cfg.scaling.num_workers, \
            f"{cfg.scaling.num_workers} workers x {need} do not fit the cluster (room for {capacity})"
        # The RayService serves what this run writes.
        for svc in _of_kind("RayService"):
            model = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]["model"]
            if model.startswith(storage.rstrip("/") + "/") and cfg.run.name in model:
                assert model == f"{storage.rstrip('/')}/{cfg.run.name}/model", f"{model}: not the run's model folder"
                for kind, group, template in _groups(svc["spec"]["rayClusterConfig"]):
                    if kind == "worker":
                        assert (_pvc_mount(template, model) or ("?",))[0] == claim, \
                            f"RayService {group['groupName']}: {model} is not on claim {claim}"


# ---- the image ---------------------------------------------------------------------------------------

def _makefile_image() -> str:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^IMAGE\s*\?=\s*(\S+)\s*$", text, re.MULTILINE)
    assert m, "Makefile: no IMAGE ?= default"
    assert re.search(r"^\.PHONY:.*\bimage\b", text, re.MULTILINE), "Makefile: image is not .PHONY"
    assert re.search(r"^image:.*\n\tdocker build -t \$\(IMAGE\) \.\s*$", text, re.MULTILINE), "Makefile: no image target"
    return m.group(1)


def test_dockerfile_is_pinned_and_installs_sqlray():
    steps = _dockerfile()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert froms, "Dockerfile: no FROM"
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    for base in froms:
        image = base.split()[0]
        assert "$" not in image and "@" not in image, f"FROM {image}: give the tag literally"
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"FROM {image}: not pinned to a tag"
        assert re.fullmatch(rf"{re.escape(ray_pin)}-py311-(cu\d+|gpu)", tag), \
            f"FROM {image}: not Ray {ray_pin} for Python 3.11 with CUDA"
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    runs = " ; ".join(arg for op, arg in steps if op == "RUN")
    assert re.search(r"pip install [^&;]*--no-cache-dir[^&;]* \"?\.(\[vllm\])?\"?(\s|$)", runs), \
        "sqlray is not pip-installed from . (with the vllm extra the Serve configs' engine needs)"
    assert "[vllm]" in runs, "the image lacks vLLM, which configs/serve-deploy.yaml and the RayService use"
    assert not re.search(r"pip install[^&;]*(-e|--editable)\b", runs), "sqlray installed editable"
    assert any(op == "COPY" and arg.split()[-2:] == [".", "."] for op, arg in steps), "the repository is not copied"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", "runs", ".cache", ".git"):
        assert path in ignored, f".dockerignore: {path} is sent to the build"


def test_one_image_name_in_manifests_kustomization_and_makefile():
    """`make image` builds what the kustomization deploys: the manifests name one image, the kustomization's
    `images` rule rewrites exactly that name (a fork changes the rule and IMAGE, not every manifest)."""
    image = _makefile_image()
    kz = _kustomization()
    (rule,) = kz["images"]
    assert f"{rule['newName']}:{rule['newTag']}" == image, "kustomization images != Makefile IMAGE"
    raw = {c["image"] for res in kz["resources"] for d in _docs(_kuberay() / res) for c in _containers(d)}
    assert len(raw) == 1 and next(iter(raw)).rpartition(":")[0] == rule["name"], \
        f"manifests name {raw}, the kustomization rewrites {rule['name']}"
    rendered = {c["image"] for _, d in _objects() for c in _containers(d)}
    assert rendered == {image}, f"deployed images {rendered} != {image}"


def test_kubectl_kustomize_renders_the_same_objects(tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: the kustomization is resolved by this file's own reader only")
    work = tmp_path / "kuberay"
    shutil.copytree(_kuberay(), work)
    for example in work.glob("*.env.example"):
        example.with_suffix("").write_text(example.read_text().replace("REPLACE_ME", "test-value"))
    out = subprocess.run([kubectl, "kustomize", str(work)], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    ours = [d for _, d in _objects()]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in ours)
    assert {c["image"] for d in rendered for c in _containers(d)} == {c["image"] for d in ours for c in _containers(d)}
    for d in rendered:
        if d["kind"] == "Secret":
            assert set(d["data"]) == set(next(o for o in ours if o["metadata"]["name"] == d["metadata"]["name"])["stringData"])
        else:
            _validate(d, "kubectl kustomize")


# ---- the cluster launcher ----------------------------------------------------------------------------

def test_launcher_validates_against_rays_schema():
    import ray

    doc = _launcher()
    schema = json.loads((Path(ray.__file__).parent / "autoscaler/ray-schema.json").read_text())
    jsonschema.validate(doc, schema)
    starts = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts, "the dashboard/Jobs API must stay on the head's loopback"
    for cmds in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(doc[cmds]), f"{cmds}: no token auth"
    for t in doc["available_node_types"].values():
        assert t["resources"]


def test_launcher_uses_precreated_security_groups_and_a_scoped_head_profile():
    doc = _launcher()
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
    lines = [ln for ln in _launcher_path().read_text().splitlines() if ln.startswith("#") and "-- sqlray train" in ln]
    assert len(lines) == 1, "the launcher file documents one example `sqlray submit ... -- sqlray train ...`"
    return shlex.split(lines[0].split(" -- ", 1)[1])


def test_launcher_example_fits_its_node_types_on_shared_storage():
    doc = _launcher()
    cfg, _ = _train_command(_example_train())
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
    doc = _launcher()
    gpu_nodes = [t["resources"] for t in doc["available_node_types"].values() if t["resources"].get("GPU")]
    for name in ("yi-ko-6b-qlora.yaml", "open-solar-ko-10.7b-qlora.yaml"):
        cfg, _ = _train_command(["sqlray", "train", "--config", f"configs/{name}"])
        assert any(r["CPU"] >= cfg.scaling.cpus_per_worker for r in gpu_nodes), \
            f"{name}: cpus_per_worker={cfg.scaling.cpus_per_worker} exceeds every GPU node type"
