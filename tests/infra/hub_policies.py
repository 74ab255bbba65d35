"""Hugging Face Hub policies over rendered objects: the shared model cache and the token.

Every Ray pod (a RayCluster's head and worker groups, or the cluster a RayJob or RayCronJob
brings along) must keep HF_HOME on a ReadWriteMany claim, so that a model is downloaded once
for all pods and runs, and may read HF_TOKEN from a Secret that is optional, so that the
cluster runs without one. A RayJob or RayCronJob that selects a running cluster instead runs
its entrypoint in that cluster's pods: the selected RayCluster must be among the objects, where
its own pods are checked. Like `policies`, each returns one readable line per violation.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.infra.policies import Obj, label, ray_clusters

HF_HOME = "HF_HOME"
HF_TOKEN = "HF_TOKEN"
RAY_JOB_KINDS = frozenset({"RayJob", "RayCronJob"})


def ray_containers(obj: Obj) -> Iterator[tuple[str, Obj, Obj]]:
    """(where, pod spec, Ray container) for every Ray pod template an object holds.

    KubeRay runs Ray in a pod's first container; later ones are sidecars.
    """
    for where, cluster in ray_clusters(obj):
        groups = [("head", cluster.get("headGroupSpec") or {})]
        groups += [
            (f"worker {g.get('groupName')}", g) for g in cluster.get("workerGroupSpecs") or []
        ]
        for name, group in groups:
            pod = (group.get("template") or {}).get("spec") or {}
            yield f"{where} {name}", pod, (pod.get("containers") or [{}])[0]


def env_var(container: Obj, name: str) -> Obj | None:
    """The container's env entry called `name`, or None."""
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def jobs_without_checked_pods(objects: list[Obj]) -> list[str]:
    """Ray jobs with no cluster of their own that select no RayCluster among `objects`."""
    clusters = {
        ((o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name"))
        for o in objects
        if o.get("kind") == "RayCluster"
    }
    found = []
    for obj in objects:
        if obj.get("kind") not in RAY_JOB_KINDS:
            continue
        spec = obj.get("spec") or {}
        job = (spec.get("jobTemplate") or {}) if obj["kind"] == "RayCronJob" else spec
        if "rayClusterSpec" in job:
            continue  # its own pods: `ray_clusters` yields them
        selected = (job.get("clusterSelector") or {}).get("ray.io/cluster")
        if (obj["metadata"].get("namespace"), selected) not in clusters:
            found.append(f"{label(obj)}: selects RayCluster {selected!r}, which is not here")
    return found


def model_cache_problems(objects: list[Obj]) -> list[str]:
    """Ray pods whose HF_HOME is not a mounted ReadWriteMany claim of their namespace."""
    claims = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o.get("kind") == "PersistentVolumeClaim"
    }
    found = jobs_without_checked_pods(objects)
    for obj in objects:
        namespace = (obj.get("metadata") or {}).get("namespace")
        for where, pod, container in ray_containers(obj):
            home = (env_var(container, HF_HOME) or {}).get("value")
            mount = next(
                (m for m in container.get("volumeMounts") or [] if m.get("mountPath") == home),
                None,
            )
            if not home or mount is None:
                found.append(f"{where}: no volume mounted at HF_HOME ({home or 'unset'})")
                continue
            volume = next((v for v in pod.get("volumes") or [] if v["name"] == mount["name"]), {})
            claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            claim = claims.get((namespace, claim_name))
            if claim is None:
                found.append(f"{where}: HF_HOME is on {mount['name']}, not a claim that is here")
            elif "ReadWriteMany" not in claim["spec"].get("accessModes", []):
                found.append(f"{where}: HF_HOME's claim {claim_name} is not ReadWriteMany")
    return found


def hub_token_problems(objects: list[Obj]) -> list[str]:
    """Ray pods that cannot read HF_TOKEN from a Secret, or cannot start without that Secret."""
    found = jobs_without_checked_pods(objects)
    for obj in objects:
        for where, _pod, container in ray_containers(obj):
            entry = env_var(container, HF_TOKEN)
            ref = ((entry or {}).get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                found.append(f"{where}: no HF_TOKEN from a secretKeyRef")
            elif ref.get("optional") is not True:
                found.append(f"{where}: HF_TOKEN's Secret {ref.get('name')} is not optional")
    return found


HUB_POLICIES = (model_cache_problems, hub_token_problems)
