"""What the cluster tests read: the objects `kubectl apply -k cluster/kuberay` creates (kustomize's secret
generator and image rewrite applied), the launcher file, the KubeRay v1.7.0 CRDs vendored in
tests/cluster/crds made strict (unknown fields are errors, as with field validation Strict), strict schemas
for the core kinds, and the operator's facts (ray-project/kuberay v1.7.0, file paths in the comments)."""
from __future__ import annotations

import copy
import functools
import gzip
import json
import re
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO  # the tree under test: point kube.ROOT at a modified copy to see a check fail
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

def kuberay_dir() -> Path:
    return ROOT / "cluster" / "kuberay"


def launcher_path() -> Path:
    return ROOT / "cluster" / "launcher" / "aws-gpu.yaml"


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d]


def kustomization() -> dict:
    return yaml.load((kuberay_dir() / "kustomization.yaml").read_text(), Loader=_Loader)


def env_keys(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def generated_secrets(kz: dict) -> list[dict]:
    """The Secrets kustomize generates, with the keys of the committed *.env.example beside each env file."""
    out = []
    for gen in kz.get("secretGenerator", []):
        assert not gen.get("literals") and not gen.get("files"), \
            f"secretGenerator {gen['name']}: literals/files put secret values in git; use envs files"
        data = {}
        for env in gen.get("envs", []):
            example = kuberay_dir() / f"{env}.example"
            assert example.exists(), f"secretGenerator {gen['name']}: {env}.example (the template) is missing"
            data.update(env_keys(example))
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "stringData": data})
    return out


def apply_images(doc: dict, images: list[dict]) -> dict:
    """kustomize's `images` transformer (it rewrites every containers[].image, CRDs included)."""
    doc = copy.deepcopy(doc)
    for c in containers(doc):
        name, _, tag = c["image"].rpartition(":")
        for rule in images:
            if rule["name"] == name:
                c["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return doc


def objects() -> list[tuple[str, dict]]:
    """Everything `kubectl apply -k cluster/kuberay` creates, as (source, object)."""
    kz = kustomization()
    out = []
    for res in kz["resources"]:
        for d in yaml_docs(kuberay_dir() / res):
            out.append((res, apply_images(d, kz.get("images", []))))
    out += [("kustomization.yaml secretGenerator", s) for s in generated_secrets(kz)]
    return out


def of_kind(kind: str) -> list[dict]:
    return [d for _, d in objects() if d["kind"] == kind]


def launcher() -> dict:
    return yaml.load(launcher_path().read_text(), Loader=_Loader)


def walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def containers(doc: dict) -> list[dict]:
    return [c for n in walk(doc) for key in ("containers", "initContainers") if isinstance(n.get(key), list)
            for c in n[key]]


def ray_clusters(doc: dict) -> list[dict]:
    """Every Ray cluster definition in an object: RayCluster.spec, RayService.spec.rayClusterConfig,
    RayJob.spec.rayClusterSpec."""
    spec = doc.get("spec", {})
    return [c for c in (spec if doc["kind"] == "RayCluster" else None, spec.get("rayClusterConfig"),
                        spec.get("rayClusterSpec")) if c]


def pod_groups(cluster: dict) -> list[tuple[str, dict, dict]]:
    """(kind, group spec, pod template) for the head and every worker group."""
    return [("head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"])] + \
        [("worker", g, g["template"]) for g in cluster.get("workerGroupSpecs", [])]


def quantity(q) -> float:
    q = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for u in sorted(units, key=len, reverse=True):
        if q.endswith(u):
            return float(q[: -len(u)]) * units[u]
    return float(q)


def ray_resources(kind: str, group: dict, template: dict) -> dict[str, float]:
    """What Ray sees on a pod: rayStartParams win, else the Ray container's limits (KubeRay's rule)."""
    limits = template["spec"]["containers"][0]["resources"].get("limits", {})
    params = group.get("rayStartParams", {})
    cpu = float(params["num-cpus"]) if "num-cpus" in params else quantity(limits.get("cpu", 0))
    gpu = float(params["num-gpus"]) if "num-gpus" in params else quantity(limits.get(GPU, 0))
    return {"CPU": cpu, "GPU": gpu}


def go_duration_s(text: str) -> float:
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
def crd_schema(kind: str) -> dict:
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
def core_schemas() -> dict[str, dict]:
    """Strict schemas for the core kinds in the kustomization. The NetworkPolicy rule and label selector
    schemas are Kubernetes' own networking/v1 types as the RayCluster CRD embeds them (spec.networkPolicy)."""
    np = crd_schema("RayCluster")["properties"]["spec"]["properties"]["networkPolicy"]["properties"]
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


def validate(doc: dict, where: str) -> None:
    kind = doc.get("kind")
    schema = crd_schema(kind) if kind in RAY_KINDS else core_schemas().get(kind)
    assert schema is not None, f"{where}: no schema for kind {kind}"
    errors = sorted(StrictValidator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}: {kind} {doc['metadata'].get('name')}:\n" + "\n".join(
        f"  {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors[:20])


def train_command(argv: list[str], base: Path | None = None):
    """(config, overrides) of a `sqlray train --config X k=v ...` command line."""
    from sqlray.training.config import load_config

    assert argv[:2] == ["sqlray", "train"], f"not a sqlray train command: {argv}"
    i = argv.index("--config")
    path, overrides = argv[i + 1], [a for a in argv[2:i] + argv[i + 2:] if "=" in a]
    local = ROOT / Path(path).relative_to(base) if base else ROOT / path
    assert local.exists(), f"{path}: no such config in the repository ({local})"
    return load_config(local, overrides), path
