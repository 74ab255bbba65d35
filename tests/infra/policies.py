"""Security and shape policies over rendered Kubernetes objects.

Each policy takes the objects `kubectl kustomize` renders (a list of dicts) and returns its
violations, one readable line each; an empty list passes. The tests run every policy on the
real overlays (expecting none) and on deliberately broken copies (expecting some), so a policy
that stops looking fails a test.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

Obj = dict[str, Any]

COMPONENT_IMAGES = frozenset({"ftpipe", "ftpipe-cuda", "ftpipe-mlflow"})
PIPELINE_RUNNER = "ftpipe-pipeline-runner"
# Secret templates in git hold this and nothing else; real values are created on the cluster.
PLACEHOLDER = re.compile(r"REPLACE_ME(-[a-z0-9-]+)?")
GIT_SHA = re.compile(r"[0-9a-f]{7,40}")
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")
# Images whose releases are numbered major.minor: for them 17.6 is exact, 17 is not.
TWO_PART_VERSIONS = {"postgres": re.compile(r"\d+\.\d+")}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
EXPOSING_SERVICE_TYPES = frozenset({"LoadBalancer", "NodePort"})
RAY_PORTS = frozenset({6379, 8265, 10001})  # GCS, dashboard + Jobs API, client
JOBS_API_PORT = 8265
# The one peer outside the Ray namespace that may reach a Ray port: the KubeRay operator, which
# submits RayJobs and polls their status through the Jobs API.
KUBERAY_OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
}
# The ftpipe pipeline's tune and train steps, which submit their stage through the Jobs API.
PIPELINE_RAY_CLIENT_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}},
    "podSelector": {"matchLabels": {"ftpipe.io/ray-client": "true"}},
}
RAYJOB_RULE = {
    "apiGroups": {"ray.io"},
    "resources": {"rayjobs", "rayjobs/status"},
    "verbs": {"create", "get", "list", "watch"},
}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def label(obj: Obj) -> str:
    """`Kind namespace/name`, the way violations name an object."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def ray_clusters(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """Every RayCluster spec an object holds: a RayCluster's own, a RayJob's or a RayCronJob's."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "RayCluster":
        yield label(obj), spec
    elif obj.get("kind") == "RayJob" and "rayClusterSpec" in spec:
        yield f"{label(obj)} rayClusterSpec", spec["rayClusterSpec"]
    elif obj.get("kind") == "RayCronJob" and "rayClusterSpec" in spec.get("jobTemplate", {}):
        yield f"{label(obj)} jobTemplate.rayClusterSpec", spec["jobTemplate"]["rayClusterSpec"]


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """(where, pod spec) for every pod an object runs, KubeRay's included."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        yield label(obj), spec
    elif kind in WORKLOAD_KINDS:
        yield label(obj), spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield label(obj), spec["jobTemplate"]["spec"]["template"].get("spec", {})
    for where, cluster in ray_clusters(obj):
        yield f"{where} head", cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {})
        for group in cluster.get("workerGroupSpecs") or []:
            yield f"{where} worker {group.get('groupName')}", group["template"].get("spec", {})
    for job, where in ((spec, label(obj)), (spec.get("jobTemplate") or {}, f"{label(obj)} job")):
        if kind in ("RayJob", "RayCronJob") and "submitterPodTemplate" in job:
            yield f"{where} submitter", job["submitterPodTemplate"].get("spec", {})


def containers(obj: Obj) -> Iterator[tuple[str, Obj, Obj]]:
    """(where, pod spec, container) for every container, KubeRay's autoscaler sidecar included."""
    for where, pod in pod_specs(obj):
        for key in ("initContainers", "containers"):
            for container in pod.get(key) or []:
                yield f"{where} container {container.get('name')}", pod, container
    for where, cluster in ray_clusters(obj):
        if cluster.get("enableInTreeAutoscaling"):
            # The operator adds this container to the head pod, configured from autoscalerOptions.
            options = cluster.get("autoscalerOptions") or {}
            head = cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {})
            sidecar = {"name": "autoscaler", **options}
            yield f"{where} autoscaler", head, sidecar


def root_containers(objects: list[Obj]) -> list[str]:
    """Containers that may run as root or gain privileges."""
    found = []
    for obj in objects:
        for where, pod, container in containers(obj):
            pod_ctx = pod.get("securityContext") or {}
            ctx = container.get("securityContext") or {}
            if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
                found.append(f"{where}: runAsNonRoot is not true")
            if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                found.append(f"{where}: runAsUser is 0")
            if ctx.get("privileged"):
                found.append(f"{where}: privileged")
            if ctx.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: allowPrivilegeEscalation is not false")
    return found


def exposed_services(objects: list[Obj]) -> list[str]:
    """Anything that publishes Ray or MLflow beyond the cluster network."""
    found = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "Service":
            if spec.get("type") in EXPOSING_SERVICE_TYPES:
                found.append(f"{label(obj)}: type {spec['type']}")
            if spec.get("externalIPs"):
                found.append(f"{label(obj)}: externalIPs")
        elif obj.get("kind") == "Ingress":
            found.append(f"{label(obj)}: an Ingress publishes ftpipe's services")
        for where, cluster in ray_clusters(obj):
            head = cluster.get("headGroupSpec") or {}
            service_type = head.get("serviceType") or head.get("headService", {}).get(
                "spec", {}
            ).get("type")
            if service_type in EXPOSING_SERVICE_TYPES:
                found.append(f"{where}: head service type {service_type}")
            if head.get("enableIngress"):
                found.append(f"{where}: head enableIngress")
    return found


def _ray_namespaces(objects: list[Obj]) -> set[str | None]:
    return {
        (o.get("metadata") or {}).get("namespace") for o in objects if o.get("kind") == "RayCluster"
    }


def _rule_reaches_ray_ports(rule: Obj) -> bool:
    ports = [p.get("port") for p in rule.get("ports") or []]
    # No ports means every port; a named port could be any of Ray's, so it counts.
    return not ports or any(p is None or isinstance(p, str) or p in RAY_PORTS for p in ports)


def ray_ports_reachable_from_outside(objects: list[Obj]) -> list[str]:
    """Ray namespaces without default-deny ingress, or admitting outside peers to Ray ports."""
    found = []
    ray_namespaces = {
        (obj.get("metadata") or {}).get("namespace")
        for obj in objects
        if obj.get("kind") == "RayCluster"
    }
    for namespace in sorted(ray_namespaces, key=str):
        policies = [
            obj
            for obj in objects
            if obj.get("kind") == "NetworkPolicy" and obj["metadata"].get("namespace") == namespace
        ]
        if not any(
            p["spec"].get("podSelector") == {}
            and "Ingress" in p["spec"].get("policyTypes", [])
            and not p["spec"].get("ingress")
            for p in policies
        ):
            found.append(f"namespace {namespace}: no default-deny ingress NetworkPolicy")
        for policy in policies:
            for i, rule in enumerate(policy["spec"].get("ingress") or []):
                if not _rule_reaches_ray_ports(rule):
                    continue
                peers = rule.get("from")
                if not peers:
                    found.append(f"{label(policy)}: ingress rule {i} admits every source")
                for peer in peers or []:
                    if set(peer) == {"podSelector"}:
                        continue  # a pod of the same namespace
                    only_jobs_api = [p.get("port") for p in rule.get("ports") or []] == [
                        JOBS_API_PORT
                    ]
                    if peer in (KUBERAY_OPERATOR_PEER, PIPELINE_RAY_CLIENT_PEER) and only_jobs_api:
                        continue
                    found.append(f"{label(policy)}: ingress rule {i} admits {peer} to Ray ports")
    return found


def non_placeholder_secrets(objects: list[Obj]) -> list[str]:
    """Secret values in git that are not REPLACE_ME placeholders."""
    found = []
    for obj in objects:
        if obj.get("kind") != "Secret":
            continue
        values = dict(obj.get("stringData") or {})
        for key, encoded in (obj.get("data") or {}).items():
            try:
                values[key] = base64.b64decode(encoded, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                values[key] = encoded  # not even base64 text: certainly no placeholder
        for key, value in values.items():
            if not PLACEHOLDER.fullmatch(str(value)):
                found.append(f"{label(obj)}: key {key} holds a value, not a placeholder")
    return found


def _is_gpu_group(group: Obj) -> bool:
    pod = group.get("template", {}).get("spec", {})
    images = {image_name(c.get("image", "")) for c in pod.get("containers") or []}
    limits = [c.get("resources", {}).get("limits", {}) for c in pod.get("containers") or []]
    return (
        "gpu" in str(group.get("groupName", "")).lower()
        or "ftpipe-cuda" in images
        or any("nvidia.com/gpu" in lim for lim in limits)
    )


def gpu_worker_problems(objects: list[Obj]) -> list[str]:
    """Ray clusters without an autoscaling GPU group, or GPU groups that would not get GPUs."""
    found = []
    for obj in objects:
        for where, cluster in ray_clusters(obj):
            groups = [g for g in cluster.get("workerGroupSpecs") or [] if _is_gpu_group(g)]
            if not groups:
                found.append(f"{where}: no GPU worker group")
            if groups and not cluster.get("enableInTreeAutoscaling"):
                found.append(f"{where}: autoscaling is off")
            for group in groups:
                found += _gpu_group_problems(f"{where} worker {group.get('groupName')}", group)
    return found


def _gpu_group_problems(where: str, group: Obj) -> list[str]:
    found = []
    if not group.get("maxReplicas", 0) > group.get("minReplicas", 0):
        found.append(f"{where}: maxReplicas must exceed minReplicas to autoscale")
    pod = group["template"].get("spec", {})
    ray = (pod.get("containers") or [{}])[0]  # KubeRay runs Ray in the first container
    resources = ray.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    gpus = limits.get("nvidia.com/gpu")
    if not gpus or int(gpus) < 1:
        found.append(f"{where}: no nvidia.com/gpu limit")
    elif requests.get("nvidia.com/gpu", gpus) != gpus:
        found.append(f"{where}: nvidia.com/gpu request differs from its limit")
    found += [f"{where}: no {r} limit" for r in ("cpu", "memory") if r not in limits]
    if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []):
        found.append(f"{where}: no toleration for nvidia.com/gpu taints")
    memory_volumes = {
        v["name"]
        for v in pod.get("volumes") or []
        if (v.get("emptyDir") or {}).get("medium") == "Memory"
    }
    if not any(
        m.get("mountPath") == "/dev/shm" and m.get("name") in memory_volumes
        for m in ray.get("volumeMounts") or []
    ):
        found.append(f"{where}: no memory-backed /dev/shm")
    return found


def image_name(image: str) -> str:
    """The last path segment of an image reference, without tag or digest."""
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def _image_tag(image: str) -> str | None:
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None: ftpipe's to a commit sha, others exactly."""
    tag = _image_tag(image)
    digest = image.split("@", 1)[1] if "@" in image else None
    if "latest" in image:
        return f"{image} uses latest"
    if digest is not None:
        return None if DIGEST.fullmatch(digest) else f"{image} has a malformed digest"
    if image_name(image) in COMPONENT_IMAGES:
        return None if tag and GIT_SHA.fullmatch(tag) else f"{image} is not tagged with a sha"
    if not (tag and TWO_PART_VERSIONS.get(image_name(image), EXACT_VERSION).match(tag)):
        return f"{image} has no exact version tag or digest"
    return None


def unpinned_images(objects: list[Obj]) -> list[str]:
    """Containers whose image is not pinned (see image_pin_problem)."""
    found = []
    for obj in objects:
        for where, _pod, container in containers(obj):
            image = container.get("image")
            if image is None and container.get("name") == "autoscaler":
                continue  # the autoscaler defaults to the head's image, checked there
            problem = image_pin_problem(str(image))
            if problem:
                found.append(f"{where}: {problem}")
    return found


def ray_without_token_auth(objects: list[Obj]) -> list[str]:
    """Ray clusters that accept unauthenticated GCS, dashboard and Jobs API calls."""
    found = []
    for obj in objects:
        for where, cluster in ray_clusters(obj):
            auth = cluster.get("authOptions") or {}
            if auth.get("mode") != "token":
                found.append(f"{where}: authOptions.mode is not token")
            if not auth.get("secretName"):
                found.append(f"{where}: no authOptions.secretName (the token Secret to create)")
    return found


def pipeline_runner_rbac_problems(objects: list[Obj]) -> list[str]:
    """The pipeline runner must be able to submit RayJobs in the Ray namespace, and no more."""
    found = []
    ray_namespaces = {
        o["metadata"].get("namespace") for o in objects if o.get("kind") == "RayCluster"
    }
    roles = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o.get("kind") == "Role"
    }
    can_create = False
    for binding in objects:
        if binding.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == PIPELINE_RUNNER
            for s in binding.get("subjects") or []
        ):
            continue
        namespace, ref = binding["metadata"].get("namespace"), binding.get("roleRef") or {}
        if binding["kind"] == "ClusterRoleBinding" or ref.get("kind") != "Role":
            found.append(f"{label(binding)}: grants a ClusterRole or cluster-wide access")
            continue
        if namespace not in ray_namespaces:
            found.append(f"{label(binding)}: grants access outside the Ray namespace")
        role = roles.get((namespace, ref.get("name")))
        for i, rule in enumerate((role or {}).get("rules") or []):
            extra = {
                key: set(rule.get(key) or []) - allowed
                for key, allowed in RAYJOB_RULE.items()
                if set(rule.get(key) or []) - allowed
            }
            if extra or rule.get("resourceNames") or rule.get("nonResourceURLs"):
                found.append(f"{label(role)}: rule {i} grants more than RayJobs: {extra or rule}")
            if "create" in rule.get("verbs", []) and "rayjobs" in rule.get("resources", []):
                can_create = True
    if ray_namespaces and not can_create:
        found.append(f"ServiceAccount {PIPELINE_RUNNER}: may not create RayJobs")
    return found


def mlflow_without_auth(objects: list[Obj]) -> list[str]:
    """MLflow servers started without the basic-auth app."""
    found = []
    for obj in objects:
        for where, _pod, container in containers(obj):
            argv = [
                str(a) for a in (container.get("command") or []) + (container.get("args") or [])
            ]
            if argv[:2] != ["mlflow", "server"]:
                continue
            if ("--app-name", "basic-auth") not in set(itertools.pairwise(argv)):
                found.append(f"{where}: mlflow server without --app-name basic-auth")
    return found


def literal_credentials(objects: list[Obj]) -> list[str]:
    """Credential-like environment variables given as literal values instead of Secret refs."""
    found = []
    for obj in objects:
        for where, _pod, container in containers(obj):
            for env in container.get("env") or []:
                if CREDENTIAL_NAME.search(env.get("name", "")) and "value" in env:
                    found.append(f"{where}: env {env['name']} is a literal, not a secretKeyRef")
    return found


ALL_POLICIES: tuple[Callable[[list[Obj]], list[str]], ...] = (
    root_containers,
    exposed_services,
    ray_ports_reachable_from_outside,
    non_placeholder_secrets,
    gpu_worker_problems,
    unpinned_images,
    ray_without_token_auth,
    pipeline_runner_rbac_problems,
    mlflow_without_auth,
    literal_credentials,
)


def assert_flags_the_broken_copy(objects: list[Obj], policy: Callable, mutate: Callable) -> None:
    """`policy` passes `objects`, and flags a copy of them that `mutate` broke."""
    objects = copy.deepcopy(objects)
    assert policy(objects) == []
    mutate(objects)
    assert policy(objects), f"{policy.__name__} did not flag the broken manifest"
