"""cluster/kuberay is deployable as written, checked without a cluster: every object the kustomization
applies validates strictly against the KubeRay v1.7.0 CRDs or strict core schemas (tests/cluster/kube.py),
then one check per deployment rule: token auth through the operator, references resolved inside the
kustomization, no deprecated fields, GPU tolerations, the RayJob's run fitting its workers on shared
storage, the Serve app and its API key; and the image: a pinned base and one image name in Dockerfile, kustomization and Makefile.
The NetworkPolicy is simulated in test_network_policy.py, the Ray launcher checked in test_launcher.py."""
from __future__ import annotations

import copy
import fnmatch
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from . import kube
from .kube import (
    AUTH_SECRET_KEY,
    DEPRECATED,
    GPU,
    INIT_TIMEOUT_ANNOTATION,
    MAX_NAME,
    MIN_TOKEN_AUTH_RAY,
    RAY_PORTS,
    containers,
    env_keys,
    go_duration_s,
    kuberay_dir,
    kustomization,
    launcher,
    objects,
    of_kind,
    pod_groups,
    quantity,
    ray_clusters,
    ray_resources,
    train_command,
    validate,
    walk,
    yaml_docs,
)

# ---- the kustomization -------------------------------------------------------------------------------

def test_kustomization_applies_every_manifest_and_keeps_secrets_out_of_git():
    kz = kustomization()
    assert kz["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kz["kind"] == "Kustomization"
    listed = set(kz["resources"])
    present = {p.name for p in kuberay_dir().glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization resources {sorted(listed)} != manifests {sorted(present)}"
    kinds = {d["kind"] for _, d in objects()}
    assert {"RayCluster", "RayJob", "RayService", "NetworkPolicy", "PersistentVolumeClaim", "Secret"} <= kinds
    assert kz.get("generatorOptions", {}).get("disableNameSuffixHash") is True, \
        "generated Secret names get a hash suffix kustomize does not write into authOptions.secretName"
    ignored = [ln.strip() for ln in (kuberay_dir() / ".gitignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    docker_ignored = (kube.ROOT / ".dockerignore").read_text().split()
    for gen in kz.get("secretGenerator", []):
        for env in gen.get("envs", []):
            assert any(fnmatch.fnmatch(env, pat) for pat in ignored), f"{env} (secret values) is not gitignored"
            assert f"cluster/kuberay/{env}" in docker_ignored or "cluster/kuberay/*.env" in docker_ignored, \
                f"{env} (secret values) would be copied into the image"
            assert set(env_keys(kuberay_dir() / f"{env}.example").values()) == {"REPLACE_ME"}, \
                f"{env}.example must hold placeholders only"
    for src, d in objects():  # a hand-written Secret in resources would put values in git
        if d["kind"] == "Secret" and src != "kustomization.yaml secretGenerator":
            values = {**d.get("stringData", {}), **d.get("data", {})}
            assert set(values.values()) <= {"REPLACE_ME"}, f"{src}: Secret {d['metadata']['name']} holds values"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayService", "NetworkPolicy",
                                  "PersistentVolumeClaim", "Secret"])
def test_objects_validate_strictly(kind):
    docs = [(src, d) for src, d in objects() if d["kind"] == kind]
    assert docs, f"no {kind} in the kustomization"
    for src, d in docs:
        validate(d, src)
        if kind in MAX_NAME:
            assert len(d["metadata"]["name"]) <= MAX_NAME[kind], f"{src}: name longer than the operator allows"


def test_strict_validation_rejects_unknown_and_mistyped_fields():
    """The validator itself: a misspelt field, a field at the wrong level, a wrong type and a duplicate
    list-map key are all errors (the CRD alone, without strictness, would accept the first two)."""
    cluster = of_kind("RayCluster")[0]
    validate(cluster, "as written")
    bad = []
    d = copy.deepcopy(cluster); d["spec"]["authOptions"]["secretname"] = "x"; bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["tolerations"] = []; bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"; bad.append(d)
    d = copy.deepcopy(cluster); c = d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    c["ports"].append(dict(c["ports"][0])); bad.append(d)
    d = copy.deepcopy(cluster); d["spec"]["managedBy"] = "someone"; bad.append(d)
    for d in bad:
        with pytest.raises(AssertionError):
            validate(d, "mutated")


def _check_private(doc: dict, where: str) -> None:
    for node in walk(doc):
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
    for src, d in objects():
        _check_private(d, src)
    _check_private(launcher(), "launcher")


# ---- token auth --------------------------------------------------------------------------------------

def test_token_auth_through_the_operator_on_every_cluster():
    secrets = {s["metadata"]["name"]: s for s in of_kind("Secret")}
    found = 0
    for src, d in objects():
        for cluster in ray_clusters(d):
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
    for src, d in objects():
        for c in containers(d):
            names = {e["name"] for e in c.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, f"{src}: {c['name']} sets the token env itself"


def test_rayjob_targets_a_token_cluster_of_the_kustomization():
    clusters = {c["metadata"]["name"]: c for c in of_kind("RayCluster")}
    for job in of_kind("RayJob"):
        sel = job["spec"].get("clusterSelector")
        if sel:  # the submitter gets its token from the selected cluster's authOptions
            assert set(sel) == {"ray.io/cluster"} and sel["ray.io/cluster"] in clusters, \
                f"RayJob {job['metadata']['name']}: clusterSelector {sel} names no RayCluster here"
            assert not job["spec"].get("shutdownAfterJobFinishes"), "shutdownAfterJobFinishes needs rayClusterSpec"
        else:
            assert job["spec"].get("rayClusterSpec"), "RayJob with neither clusterSelector nor rayClusterSpec"

# ---- references --------------------------------------------------------------------------------------

def _references(doc: dict) -> list[tuple[str, str, str | None]]:
    """(kind, name, key) of every Secret, ConfigMap and PVC an object uses."""
    out = []
    for n in walk(doc):
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
    for cluster in ray_clusters(doc):
        if cluster.get("authOptions", {}).get("secretName"):
            out.append(("Secret", cluster["authOptions"]["secretName"], AUTH_SECRET_KEY))
    return out


def test_every_referenced_secret_configmap_and_claim_is_in_the_kustomization():
    defined = {(d["kind"], d["metadata"]["name"]): d for _, d in objects()}
    refs = [(src, r) for src, d in objects() for r in _references(d)]
    assert {r[0] for _, r in refs} >= {"Secret", "PersistentVolumeClaim"}
    for src, (kind, name, key) in refs:
        assert (kind, name) in defined, f"{src}: {kind} {name} is used but not defined in the kustomization"
        if key:
            obj = defined[(kind, name)]
            assert key in {**obj.get("data", {}), **obj.get("stringData", {})}, f"{src}: {kind} {name} has no key {key}"


# ---- RayService --------------------------------------------------------------------------------------

def test_no_deprecated_fields_and_rayservice_initializing_timeout():
    for src, d in objects():
        for path in DEPRECATED.get(d["kind"], []):
            node = d
            for p in path[:-1]:
                node = node.get(p, {})
            assert path[-1] not in node, f"{src}: {'.'.join(path)} is deprecated and unused by the operator"
    for svc in of_kind("RayService"):
        timeout = svc["metadata"].get("annotations", {}).get(INIT_TIMEOUT_ANNOTATION)
        assert timeout, f"RayService: no {INIT_TIMEOUT_ANNOTATION} annotation"
        assert 600 <= go_duration_s(timeout) <= 7200, f"{timeout}: loading a 6B model takes minutes, not hours"


def test_gpu_pods_tolerate_the_gpu_taint():
    gpu_tolerations = []
    for src, d in objects():
        for cluster in ray_clusters(d):
            for kind, group, template in pod_groups(cluster):
                res = template["spec"]["containers"][0]["resources"]
                gpus = quantity(res.get("limits", {}).get(GPU, 0))
                assert quantity(res.get("requests", {}).get(GPU, gpus)) == gpus, \
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

    services = of_kind("RayService")
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
        for c in containers(cluster):  # Serve's HAProxy ingress on every node
            assert {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"} in c.get("env", []), f"{c['name']}: no HAProxy"
        hosts = 0
        for kind, group, template in pod_groups(cluster):
            res = ray_resources(kind, group, template)
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
    text = re.sub(r"\\\n", " ", (kube.ROOT / "Dockerfile").read_text())
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip() if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _workdir() -> str:
    return [arg for op, arg in _dockerfile() if op == "WORKDIR"][-1]


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
    clusters = {c["metadata"]["name"]: c["spec"] for c in of_kind("RayCluster")}
    claims = {c["metadata"]["name"]: c for c in of_kind("PersistentVolumeClaim")}
    for job in of_kind("RayJob"):
        entry = job["spec"]["entrypoint"]
        assert entry.startswith("sqlray "), "the entrypoint runs sqlray's CLI"
        assert "runtimeEnvYAML" not in job["spec"] or "working_dir" not in job["spec"]["runtimeEnvYAML"], \
            "sqlray is installed in the image; a working_dir upload would put the repo's folders on sys.path"
        cfg, path = train_command(shlex.split(entry), base=Path(_workdir()))
        assert path.startswith(_workdir().rstrip("/") + "/"), f"{path}: not under the image's {_workdir()}"
        cluster = job["spec"].get("rayClusterSpec") or clusters[job["spec"]["clusterSelector"]["ray.io/cluster"]]
        storage = cfg.run.storage_path
        assert storage.startswith("/") and "://" not in storage, f"run.storage_path={storage}: not a shared mount"
        used = set()
        for kind, group, template in pod_groups(cluster):
            mount = _pvc_mount(template, storage)
            assert mount and not mount[1], f"{kind} {group.get('groupName', '')}: {storage} is not a writable PVC mount"
            used.add(mount[0])
        assert len(used) == 1, f"head and workers mount different claims at {storage}: {used}"
        (claim,) = used
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim}: not ReadWriteMany"
        # Ray Train's workers: num_workers bundles of {CPU: cpus_per_worker, GPU: 1 if use_gpu}.
        need = {"CPU": cfg.scaling.cpus_per_worker, "GPU": 1.0 if cfg.scaling.use_gpu else 0.0}
        capacity = 0
        for kind, group, template in pod_groups(cluster):
            res = ray_resources(kind, group, template)
            per_pod = min(int(res[k] // v) for k, v in need.items() if v)
            capacity += per_pod * (1 if kind == "head" else group["maxReplicas"])
        assert capacity >= cfg.scaling.num_workers, \
            f"{cfg.scaling.num_workers} workers x {need} do not fit the cluster (room for {capacity})"
        # The RayService serves what this run writes.
        for svc in of_kind("RayService"):
            model = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]["model"]
            if model.startswith(storage.rstrip("/") + "/") and cfg.run.name in model:
                assert model == f"{storage.rstrip('/')}/{cfg.run.name}/model", f"{model}: not the run's model folder"
                for kind, group, template in pod_groups(svc["spec"]["rayClusterConfig"]):
                    if kind == "worker":
                        assert (_pvc_mount(template, model) or ("?",))[0] == claim, \
                            f"RayService {group['groupName']}: {model} is not on claim {claim}"


# ---- the image ---------------------------------------------------------------------------------------

def _makefile_image() -> str:
    text = (kube.ROOT / "Makefile").read_text()
    m = re.search(r"^IMAGE\s*\?=\s*(\S+)\s*$", text, re.MULTILINE)
    assert m, "Makefile: no IMAGE ?= default"
    assert re.search(r"^\.PHONY:.*\bimage\b", text, re.MULTILINE), "Makefile: image is not .PHONY"
    assert re.search(r"^image:.*\n\tdocker build -t \$\(IMAGE\) \.\s*$", text, re.MULTILINE), "Makefile: no image target"
    return m.group(1)


def test_dockerfile_is_pinned_and_installs_sqlray():
    steps = _dockerfile()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert froms, "Dockerfile: no FROM"
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (kube.ROOT / "pyproject.toml").read_text()).group(1)
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
    ignored = (kube.ROOT / ".dockerignore").read_text().split()
    for path in (".venv", "runs", ".cache", ".git"):
        assert path in ignored, f".dockerignore: {path} is sent to the build"


def test_one_image_name_in_manifests_kustomization_and_makefile():
    """`make image` builds what the kustomization deploys: the manifests name one image, the kustomization's
    `images` rule rewrites exactly that name (a fork changes the rule and IMAGE, not every manifest)."""
    image = _makefile_image()
    kz = kustomization()
    (rule,) = kz["images"]
    assert f"{rule['newName']}:{rule['newTag']}" == image, "kustomization images != Makefile IMAGE"
    raw = {c["image"] for res in kz["resources"] for d in yaml_docs(kuberay_dir() / res) for c in containers(d)}
    assert len(raw) == 1 and next(iter(raw)).rpartition(":")[0] == rule["name"], \
        f"manifests name {raw}, the kustomization rewrites {rule['name']}"
    rendered = {c["image"] for _, d in objects() for c in containers(d)}
    assert rendered == {image}, f"deployed images {rendered} != {image}"


def test_kubectl_kustomize_renders_the_same_objects(tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: the kustomization is resolved by this file's own reader only")
    work = tmp_path / "kuberay"
    shutil.copytree(kuberay_dir(), work)
    for example in work.glob("*.env.example"):
        example.with_suffix("").write_text(example.read_text().replace("REPLACE_ME", "test-value"))
    out = subprocess.run([kubectl, "kustomize", str(work)], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    ours = [d for _, d in objects()]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in ours)
    assert {c["image"] for d in rendered for c in containers(d)} == {c["image"] for d in ours for c in containers(d)}
    for d in rendered:
        if d["kind"] == "Secret":
            assert set(d["data"]) == set(next(o for o in ours if o["metadata"]["name"] == d["metadata"]["name"])["stringData"])
        else:
            validate(d, "kubectl kustomize")
