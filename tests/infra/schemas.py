"""Offline schema validation: core kinds with kubernetes-validate, KubeRay kinds with its CRDs."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

Obj = dict[str, Any]

KUBERAY_KINDS = frozenset({"RayCluster", "RayJob", "RayCronJob"})
# The oldest Kubernetes minor ftpipe supports, and the newest kubernetes-validate bundles.
K8S_MIN_VERSION = "1.30.0"


def core_schema_errors(obj: Obj, k8s_version: str) -> list[str]:
    """Errors of a core object against the bundled Kubernetes schema; unknown fields count."""
    import kubernetes_validate

    try:
        # strict: additionalProperties are errors, so a misspelt field does not pass silently.
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "<root>"
        return [f"{path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def _forbid_unknown_fields(schema: Obj) -> Obj:
    """The API server prunes unknown fields of a CRD silently; here they are errors instead."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def crd_validators(schema_dir: Path) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, for every served version of every CRD in schema_dir."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    validators = {}
    for path in sorted(schema_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _forbid_unknown_fields(version["schema"]["openAPIV3Schema"])
                    validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(
                        schema
                    )
    return validators


def crd_schema_errors(obj: Obj, schema_dir: Path) -> list[str]:
    """Errors of a KubeRay object against the operator's CRD schema."""
    validator = crd_validators(schema_dir).get((obj.get("apiVersion"), obj.get("kind")))
    if validator is None:
        return [f"no CRD schema for {obj.get('apiVersion')} {obj.get('kind')} in {schema_dir}"]
    return [
        f"{'.'.join(str(p) for p in error.path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
