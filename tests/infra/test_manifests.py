"""Every overlay renders, every object matches its schema, and every policy holds (and bites)."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra import policies
from tests.infra.rendering import (
    FAKE_SHA,
    KUBERAY_SCHEMAS,
    OVERLAYS,
    REGISTRY,
    REPO,
    Obj,
    run_render_sh,
)
from tests.infra.schemas import (
    K8S_MIN_VERSION,
    KUBERAY_KINDS,
    core_schema_errors,
    crd_schema_errors,
)

SETS = [*OVERLAYS, "secrets", "jobs"]


def find(objects: list[Obj], kind: str, name: str, namespace: str | None = None) -> Obj:
    """The one object of that kind and name (and namespace, where given)."""
    matches = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and namespace in (None, o["metadata"].get("namespace"))
    ]
    assert len(matches) == 1, f"{len(matches)} objects {kind} {namespace}/{name}"
    return matches[0]


def gpu_group(objects: list[Obj]) -> Obj:
    return find(objects, "RayCluster", "raycluster")["spec"]["workerGroupSpecs"][0]


@pytest.fixture(scope="session")
def rendered_sets(deployable, secret_templates, job_templates) -> dict[str, list[Obj]]:
    return {**deployable, "secrets": secret_templates, "jobs": job_templates}


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_stack_and_no_secrets(deployable, overlay):
    objects = deployable[overlay]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [
        ("Namespace", "ray"),
        ("Namespace", "mlflow"),
        ("RayCluster", "raycluster"),
        ("RayCronJob", "ftpipe-nightly"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "postgres"),
        ("ServiceAccount", "ftpipe-pipeline-runner"),
        ("Role", "ftpipe-rayjob-submitter"),
        ("RoleBinding", "ftpipe-pipeline-runner-rayjobs"),
        ("NetworkPolicy", "default-deny-ingress"),
    ]:
        assert expected in kinds
    # Applying a Secret template would overwrite the real Secret with placeholders.
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_overlays_differ_where_it_matters(deployable):
    dev, prod = deployable["dev"], deployable["prod"]

    def sizes(objects: list[Obj]) -> tuple:
        group = gpu_group(objects)
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        claim = find(objects, "StatefulSet", "postgres")["spec"]["volumeClaimTemplates"][0]
        return (
            limits["nvidia.com/gpu"],
            group["maxReplicas"],
            claim["spec"]["storageClassName"],
            claim["spec"]["resources"]["requests"]["storage"],
            find(objects, "Deployment", "mlflow")["spec"]["replicas"],
        )

    assert sizes(dev) == (1, 2, "standard", "10Gi", 1)
    assert sizes(prod) == (4, 4, "fast-ssd", "100Gi", 2)
    assert ("PodDisruptionBudget", "mlflow") in {(o["kind"], o["metadata"]["name"]) for o in prod}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_carries_the_placeholder_that_render_sh_replaces(raw_overlays, deployable, overlay):
    def component_images(objects: list[Obj]) -> set[str]:
        return {
            c["image"]
            for o in objects
            for _, _, c in policies.containers(o)
            if c.get("image") and policies.image_name(c["image"]) in policies.COMPONENT_IMAGES
        }

    # Committed overlays never hold a real sha, which would go stale with the next commit.
    assert component_images(raw_overlays[overlay]) == {
        "ftpipe:GIT_SHA",
        "ftpipe-cuda:GIT_SHA",
        "ftpipe-mlflow:GIT_SHA",
    }
    assert component_images(deployable[overlay]) == {
        f"{REGISTRY}/ftpipe:{FAKE_SHA}",
        f"{REGISTRY}/ftpipe-cuda:{FAKE_SHA}",
        f"{REGISTRY}/ftpipe-mlflow:{FAKE_SHA}",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("staging", REGISTRY, FAKE_SHA), "no overlay 'staging'"),
        (("dev", REGISTRY, "GIT_SHA"), "is not a git commit sha"),
        (("dev", REGISTRY, "latest"), "is not a git commit sha"),
        (("dev", "registry example/ml", FAKE_SHA), "is not a registry path"),
        (("dev", REGISTRY), "usage:"),
    ],
)
def test_render_sh_refuses_bad_arguments(infra_copy, args, message):
    result = run_render_sh(infra_copy, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_ray_version_matches_constraints(deployable):
    pins = (REPO / "constraints.txt").read_text()
    ray = re.search(r"^ray==(\S+)$", pins, re.MULTILINE)
    assert ray, "constraints.txt pins no ray version"
    for objects in deployable.values():
        assert find(objects, "RayCluster", "raycluster")["spec"]["rayVersion"] == ray.group(1)


# --- schemas -----------------------------------------------------------------------------------


def latest_k8s_version() -> str:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install .[dev])"
    )
    return kubernetes_validate.latest_version()


@pytest.mark.parametrize("version", ["min", "latest"])
@pytest.mark.parametrize("name", SETS)
def test_core_objects_match_kubernetes_schemas(rendered_sets, name, version):
    k8s = latest_k8s_version() if version == "latest" else K8S_MIN_VERSION
    core = [o for o in rendered_sets[name] if o["kind"] not in KUBERAY_KINDS]
    errors = [f"{policies.label(o)}: {e}" for o in core for e in core_schema_errors(o, k8s)]
    assert not errors, f"Kubernetes {k8s}:\n" + "\n".join(errors)


def kuberay_schemas() -> Path:
    if not KUBERAY_SCHEMAS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY_SCHEMAS} (shared/k8s-schemas)")
    return KUBERAY_SCHEMAS


@pytest.mark.parametrize("name", SETS)
def test_kuberay_objects_match_crd_schemas(rendered_sets, name):
    schema_dir = kuberay_schemas()
    ray = [o for o in rendered_sets[name] if o["kind"] in KUBERAY_KINDS]
    expected = {"secrets": set(), "jobs": {"RayJob"}}.get(name, {"RayCluster", "RayCronJob"})
    assert {o["kind"] for o in ray} == expected
    errors = [f"{policies.label(o)}: {e}" for o in ray for e in crd_schema_errors(o, schema_dir)]
    assert not errors, "\n".join(errors)


def test_crd_validation_rejects_misspelt_fields_and_wrong_types(deployable):
    """The API server would prune an unknown field silently; here it is an error."""
    objects = copy.deepcopy(deployable["dev"])
    cluster = find(objects, "RayCluster", "raycluster")
    cluster["spec"]["workerGroupSpec"] = cluster["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in crd_schema_errors(cluster, kuberay_schemas()))
    cronjob = find(objects, "RayCronJob", "ftpipe-nightly")
    cronjob["spec"]["suspend"] = "yes"
    assert any("suspend" in e for e in crd_schema_errors(cronjob, kuberay_schemas()))


def test_core_validation_rejects_misspelt_fields_and_wrong_types(deployable):
    objects = copy.deepcopy(deployable["dev"])
    k8s = latest_k8s_version()
    service = find(objects, "Service", "mlflow")
    service["spec"]["ports"][0]["port"] = "five thousand"
    assert core_schema_errors(service, k8s)
    deployment = find(objects, "Deployment", "mlflow")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    assert any("securityContxt" in e for e in core_schema_errors(deployment, k8s))


# --- policies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("policy", policies.ALL_POLICIES, ids=lambda p: p.__name__)
def test_policy_holds(everything, policy, overlay):
    assert policy(everything[overlay]) == []


def _container(objects: list[Obj], kind: str, name: str) -> Obj:
    obj = find(objects, kind, name)
    if kind == "RayCluster":
        return obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return obj["spec"]["template"]["spec"]["containers"][0]


def _set_head_user_root(objects: list[Obj]) -> None:
    _container(objects, "RayCluster", "raycluster")["securityContext"]["runAsUser"] = 0


def _drop_run_as_non_root(objects: list[Obj]) -> None:
    mlflow = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    del mlflow["securityContext"]["runAsNonRoot"]
    del mlflow["containers"][0]["securityContext"]["runAsNonRoot"]


def _privileged_postgres(objects: list[Obj]) -> None:
    _container(objects, "StatefulSet", "postgres")["securityContext"]["privileged"] = True


def _load_balancer(objects: list[Obj]) -> None:
    find(objects, "Service", "mlflow")["spec"]["type"] = "LoadBalancer"


def _node_port_head(objects: list[Obj]) -> None:
    find(objects, "RayCluster", "raycluster")["spec"]["headGroupSpec"]["serviceType"] = "NodePort"


def _add_ingress(objects: list[Obj]) -> None:
    backend = {"service": {"name": "raycluster-head-svc", "port": {"number": 8265}}}
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "ray-dashboard", "namespace": "ray"},
            "spec": {"defaultBackend": backend},
        }
    )


def _drop_default_deny(objects: list[Obj]) -> None:
    objects.remove(find(objects, "NetworkPolicy", "default-deny-ingress", "ray"))


def _open_dashboard_to_all_namespaces(objects: list[Obj]) -> None:
    peer = {"namespaceSelector": {}}
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-dashboard", "namespace": "ray"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [peer], "ports": [{"port": 8265}]}],
            },
        }
    )


def _operator_on_every_port(objects: list[Obj]) -> None:
    policy = find(objects, "NetworkPolicy", "allow-kuberay-operator-to-jobs-api")
    del policy["spec"]["ingress"][0]["ports"]


def _pipeline_on_every_port(objects: list[Obj]) -> None:
    policy = find(objects, "NetworkPolicy", "allow-ftpipe-pipeline-to-jobs-api")
    del policy["spec"]["ingress"][0]["ports"]


def _pipeline_from_any_pod(objects: list[Obj]) -> None:
    policy = find(objects, "NetworkPolicy", "allow-ftpipe-pipeline-to-jobs-api")
    del policy["spec"]["ingress"][0]["from"][0]["podSelector"]


def _real_secret_value(objects: list[Obj]) -> None:
    find(objects, "Secret", "ray-auth-token", "ray")["stringData"]["auth_token"] = (
        "9f8e7d6c5b4a3f2e"
    )


def _real_secret_data(objects: list[Obj]) -> None:
    secret = find(objects, "Secret", "mlflow-db")
    secret["data"] = {"password": base64.b64encode(b"correct horse").decode()}


def _no_gpu_limit(objects: list[Obj]) -> None:
    resources = gpu_group(objects)["template"]["spec"]["containers"][0]["resources"]
    del resources["limits"]["nvidia.com/gpu"], resources["requests"]["nvidia.com/gpu"]


def _no_toleration(objects: list[Obj]) -> None:
    del gpu_group(objects)["template"]["spec"]["tolerations"]


def _no_dev_shm(objects: list[Obj]) -> None:
    mounts = gpu_group(objects)["template"]["spec"]["containers"][0]["volumeMounts"]
    mounts[:] = [m for m in mounts if m["mountPath"] != "/dev/shm"]


def _no_autoscaling(objects: list[Obj]) -> None:
    find(objects, "RayCluster", "raycluster")["spec"]["enableInTreeAutoscaling"] = False


def _image(image: str) -> Callable[[list[Obj]], None]:
    def mutate(objects: list[Obj]) -> None:
        _container(objects, "StatefulSet", "postgres")["image"] = image

    return mutate


def _placeholder_tag(objects: list[Obj]) -> None:
    _container(objects, "RayCluster", "raycluster")["image"] = "ftpipe:GIT_SHA"


def _no_auth_options(objects: list[Obj]) -> None:
    del find(objects, "RayCluster", "raycluster")["spec"]["authOptions"]


def _auth_disabled(objects: list[Obj]) -> None:
    find(objects, "RayCluster", "raycluster")["spec"]["authOptions"]["mode"] = "disabled"


def _wildcard_verbs(objects: list[Obj]) -> None:
    find(objects, "Role", "ftpipe-rayjob-submitter")["rules"][0]["verbs"] = ["*"]


def _read_secrets(objects: list[Obj]) -> None:
    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    find(objects, "Role", "ftpipe-rayjob-submitter")["rules"].append(rule)


def _cluster_admin(objects: list[Obj]) -> None:
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ftpipe-admin"},
            "roleRef": {"apiGroup": "", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "ftpipe-pipeline-runner", "namespace": "x"}
            ],
        }
    )


def _cannot_create(objects: list[Obj]) -> None:
    find(objects, "Role", "ftpipe-rayjob-submitter")["rules"][0]["verbs"] = ["get", "list"]


def _mlflow_without_auth(objects: list[Obj]) -> None:
    _container(objects, "Deployment", "mlflow")["args"] = ["--host", "0.0.0.0"]


def _literal_password(objects: list[Obj]) -> None:
    env = _container(objects, "Deployment", "mlflow")["env"]
    env.append({"name": "PGPASSWORD", "value": "hunter2hunter2"})


BROKEN = [
    ("root-user", policies.root_containers, _set_head_user_root),
    ("root-no-run-as-non-root", policies.root_containers, _drop_run_as_non_root),
    ("root-privileged", policies.root_containers, _privileged_postgres),
    ("load-balancer", policies.exposed_services, _load_balancer),
    ("node-port-ray-head", policies.exposed_services, _node_port_head),
    ("ingress", policies.exposed_services, _add_ingress),
    ("no-default-deny", policies.ray_ports_reachable_from_outside, _drop_default_deny),
    (
        "dashboard-to-all-namespaces",
        policies.ray_ports_reachable_from_outside,
        _open_dashboard_to_all_namespaces,
    ),
    ("operator-every-port", policies.ray_ports_reachable_from_outside, _operator_on_every_port),
    ("pipeline-every-port", policies.ray_ports_reachable_from_outside, _pipeline_on_every_port),
    ("pipeline-any-pod", policies.ray_ports_reachable_from_outside, _pipeline_from_any_pod),
    ("secret-string-data", policies.non_placeholder_secrets, _real_secret_value),
    ("secret-data", policies.non_placeholder_secrets, _real_secret_data),
    ("gpu-no-limit", policies.gpu_worker_problems, _no_gpu_limit),
    ("gpu-no-toleration", policies.gpu_worker_problems, _no_toleration),
    ("gpu-no-dev-shm", policies.gpu_worker_problems, _no_dev_shm),
    ("gpu-no-autoscaling", policies.gpu_worker_problems, _no_autoscaling),
    ("image-latest", policies.unpinned_images, _image("postgres:latest")),
    ("image-untagged", policies.unpinned_images, _image("postgres")),
    ("image-major-only", policies.unpinned_images, _image("postgres:17")),
    ("image-bad-digest", policies.unpinned_images, _image("postgres@sha256:abc")),
    ("image-placeholder-tag", policies.unpinned_images, _placeholder_tag),
    ("ray-no-auth-options", policies.ray_without_token_auth, _no_auth_options),
    ("ray-auth-disabled", policies.ray_without_token_auth, _auth_disabled),
    ("rbac-wildcard-verbs", policies.pipeline_runner_rbac_problems, _wildcard_verbs),
    ("rbac-secrets", policies.pipeline_runner_rbac_problems, _read_secrets),
    ("rbac-cluster-admin", policies.pipeline_runner_rbac_problems, _cluster_admin),
    ("rbac-cannot-create", policies.pipeline_runner_rbac_problems, _cannot_create),
    ("mlflow-no-auth", policies.mlflow_without_auth, _mlflow_without_auth),
    ("literal-password", policies.literal_credentials, _literal_password),
]


def test_every_policy_has_a_broken_case():
    assert {policy for _, policy, _ in BROKEN} == set(policies.ALL_POLICIES)


@pytest.mark.parametrize(("policy", "mutate"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_policy_flags_broken_manifests(everything, policy, mutate):
    policies.assert_flags_the_broken_copy(everything["dev"], policy, mutate)


# --- secrets: every reference has a template, every template a documented command ---------------


def secret_refs(objects: list[Obj]) -> set[tuple[str, str, str]]:
    """(namespace, secret, key) for every Secret key the workloads read."""
    refs = set()
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        for _, _, container in policies.containers(obj):
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((namespace, ref["name"], ref["key"]))
        for _, cluster in policies.ray_clusters(obj):
            refs.add((namespace, cluster["authOptions"]["secretName"], "auth_token"))
    return refs


def template_keys(templates: list[Obj]) -> set[tuple[str, str, str]]:
    return {
        (t["metadata"]["namespace"], t["metadata"]["name"], key)
        for t in templates
        for key in t.get("stringData", {})
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_the_workloads_read_has_a_template(deployable, secret_templates, overlay):
    missing = secret_refs(deployable[overlay]) - template_keys(secret_templates)
    assert not missing, f"no template in infra/secrets for {sorted(missing)}"


def test_every_secret_template_has_a_create_command_in_the_guide(secret_templates):
    guide = (REPO / "docs" / "deploy.md").read_text()
    commands = re.findall(r"kubectl create secret generic (?:[^\n]*\\\n)*[^\n]*", guide)
    for namespace, name, key in sorted(template_keys(secret_templates)):
        assert any(
            f"generic {name} " in c and f"-n {namespace}" in c and f"--from-literal={key}=" in c
            for c in commands
        ), f"docs/deploy.md has no `kubectl create secret generic {name} -n {namespace}` with {key}"
