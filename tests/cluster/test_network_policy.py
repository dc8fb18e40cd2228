"""cluster/kuberay's NetworkPolicy, simulated with Kubernetes' ingress semantics on the labels the KubeRay
operator puts on Ray pods and RayJob submitters: Ray pods among themselves, the operator on the dashboard
and Serve, labelled client namespaces on Serve only, and nobody else."""
from __future__ import annotations

from .kube import (
    CLIENT_NS_LABEL,
    OPERATOR_CREATED_BY,
    OPERATOR_NAMESPACE,
    OPERATOR_POD_LABELS,
    objects,
    of_kind,
    pod_groups,
    ray_clusters,
)

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
    for _, d in objects():
        for cluster in ray_clusters(d):
            name = d["metadata"]["name"] if d["kind"] == "RayCluster" else f"{d['metadata']['name']}-raycluster-x1y2z"
            for kind, group, template in pod_groups(cluster):
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
    policies = of_kind("NetworkPolicy")
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
    jobs = of_kind("RayJob")
    assert jobs
    for job in jobs:
        submitter = _submitter_labels(job)
        heads = [dst for where, dst in pods if dst["ray.io/node-type"] == "head"]
        for dst in heads:
            assert _admitted(policies, dst, _src(submitter, NAMESPACE), 8265), "RayJob submitter refused on 8265"
            assert not _admitted(policies, dst, _src(submitter, NAMESPACE), 6379), "RayJob submitter admitted on 6379"
            assert not _admitted(policies, dst, _src(submitter, "other-team"), 8265), "foreign submitter on 8265"


def test_networkpolicy_has_no_wildcard_peer():
    for p in of_kind("NetworkPolicy"):
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
