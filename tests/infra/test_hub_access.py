"""Every Ray pod and job keeps HF_HOME on the shared model cache and may read HF_TOKEN.

The policies run on what a cluster gets (each overlay with its Secrets and one-off jobs),
expecting nothing, and on broken copies, expecting a violation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.infra.hub_policies import (
    HF_HOME,
    HF_TOKEN,
    HUB_POLICIES,
    env_var,
    hub_token_problems,
    model_cache_problems,
    ray_containers,
)
from tests.infra.policies import assert_flags_the_broken_copy
from tests.infra.rendering import OVERLAYS, Obj
from tests.infra.test_manifests import find

CACHE = "hf-model-cache"


def cluster(objects: list[Obj]) -> Obj:
    return find(objects, "RayCluster", "raycluster")


def head(objects: list[Obj]) -> Obj:
    return cluster(objects)["spec"]["headGroupSpec"]["template"]["spec"]


def worker(objects: list[Obj]) -> Obj:
    return cluster(objects)["spec"]["workerGroupSpecs"][0]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("policy", HUB_POLICIES, ids=lambda p: p.__name__)
def test_policy_holds(everything, policy, overlay):
    assert policy(everything[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_mounts_the_one_cache_where_hf_home_points(deployable, overlay):
    found = [c for o in deployable[overlay] for c in ray_containers(o)]
    assert len(found) == 2  # the head and the GPU group
    for _, pod, container in found:
        home = env_var(container, HF_HOME)["value"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == home]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == CACHE
        token = env_var(container, HF_TOKEN)["valueFrom"]["secretKeyRef"]
        assert token == {"name": "hf-token", "key": "token", "optional": True}


def test_jobs_run_on_the_checked_cluster(job_templates, deployable):
    """HTTPMode jobs bring no pods: they run in raycluster's, with its cache and token."""
    cron = find(deployable["dev"], "RayCronJob", "ftpipe-nightly")["spec"]["jobTemplate"]
    job = find(job_templates, "RayJob", "ftpipe-train")["spec"]
    for spec in (cron, job):
        assert "rayClusterSpec" not in spec and "submitterPodTemplate" not in spec
        assert spec["clusterSelector"] == {"ray.io/cluster": "raycluster"}


def test_overlays_size_the_cache_on_a_shared_class(deployable):
    def claim(objects: list[Obj]) -> tuple:
        spec = find(objects, "PersistentVolumeClaim", CACHE, "ray")["spec"]
        return spec["accessModes"], spec["storageClassName"], spec["resources"]["requests"]

    assert claim(deployable["dev"]) == (["ReadWriteMany"], "nfs-client", {"storage": "20Gi"})
    assert claim(deployable["prod"]) == (["ReadWriteMany"], "shared-rwx", {"storage": "500Gi"})


def _no_hf_home_on_workers(objects: list[Obj]) -> None:
    env = worker(objects)["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != HF_HOME]


def _cache_elsewhere(objects: list[Obj]) -> None:
    for mount in head(objects)["containers"][0]["volumeMounts"]:
        if mount["name"] == CACHE:
            mount["mountPath"] = "/tmp/hf"


def _cache_on_empty_dir(objects: list[Obj]) -> None:
    for volume in worker(objects)["volumes"]:
        if volume["name"] == CACHE:
            del volume["persistentVolumeClaim"]
            volume["emptyDir"] = {}


def _claim_read_write_once(objects: list[Obj]) -> None:
    find(objects, "PersistentVolumeClaim", CACHE)["spec"]["accessModes"] = ["ReadWriteOnce"]


def _claim_missing(objects: list[Obj]) -> None:
    objects.remove(find(objects, "PersistentVolumeClaim", CACHE))


def _token_required(objects: list[Obj]) -> None:
    ref = env_var(head(objects)["containers"][0], HF_TOKEN)["valueFrom"]["secretKeyRef"]
    ref["optional"] = False


def _token_missing(objects: list[Obj]) -> None:
    env = worker(objects)["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != HF_TOKEN]


def _token_literal(objects: list[Obj]) -> None:
    entry = env_var(head(objects)["containers"][0], HF_TOKEN)
    del entry["valueFrom"]
    entry["value"] = "hf_not_a_real_token"


def _job_on_another_cluster(objects: list[Obj]) -> None:
    job = find(objects, "RayJob", "ftpipe-train")
    job["spec"]["clusterSelector"] = {"ray.io/cluster": "elsewhere"}


def _job_with_a_bare_cluster(objects: list[Obj]) -> None:
    """A RayJob that brings its own cluster, whose pods have neither cache nor token."""
    job = find(objects, "RayJob", "ftpipe-train")
    del job["spec"]["clusterSelector"]
    own = copy.deepcopy(cluster(objects)["spec"])
    for group in [own["headGroupSpec"], *own["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] not in (HF_HOME, HF_TOKEN)]
    job["spec"]["rayClusterSpec"] = own


BROKEN: list[tuple[str, Callable[[list[Obj]], list[str]], Callable[[list[Obj]], None]]] = [
    ("no-hf-home", model_cache_problems, _no_hf_home_on_workers),
    ("cache-not-at-hf-home", model_cache_problems, _cache_elsewhere),
    ("cache-on-empty-dir", model_cache_problems, _cache_on_empty_dir),
    ("claim-rwo", model_cache_problems, _claim_read_write_once),
    ("claim-missing", model_cache_problems, _claim_missing),
    ("cache-job-elsewhere", model_cache_problems, _job_on_another_cluster),
    ("cache-job-own-cluster", model_cache_problems, _job_with_a_bare_cluster),
    ("token-required", hub_token_problems, _token_required),
    ("token-missing", hub_token_problems, _token_missing),
    ("token-literal", hub_token_problems, _token_literal),
    ("token-job-elsewhere", hub_token_problems, _job_on_another_cluster),
    ("token-job-own-cluster", hub_token_problems, _job_with_a_bare_cluster),
]


def test_every_policy_has_a_broken_case():
    assert {policy for _, policy, _ in BROKEN} == set(HUB_POLICIES)


@pytest.mark.parametrize(("policy", "mutate"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_policy_flags_broken_manifests(everything, policy, mutate):
    assert_flags_the_broken_copy(everything["dev"], policy, mutate)
