"""The pipeline compiles, and the config's `pipeline` section shapes every stage's pod."""

from __future__ import annotations

import yaml

from ftpipe.config import load_config
from pipelines.finetune import compile_pipeline

STAGES = ("identify", "prep", "recommend", "tune", "train", "evaluate", "register", "promote")


def _documents(path):
    """The pipeline spec, and the Kubernetes platform spec (empty when nothing needs one)."""
    spec, *platform = yaml.safe_load_all(path.read_text())
    return spec, platform[0] if platform else {}


def test_the_demo_pipeline_compiles_with_every_stage_and_a_gated_promote(tmp_path):
    spec, _ = _documents(compile_pipeline(load_config("configs/demo.yaml"), tmp_path / "p.yaml"))
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "config", "ray_address", "mlflow_uri"
    }  # fmt: skip
    tasks = spec["root"]["dag"]["tasks"]
    inner = tasks["condition-1"]["componentRef"]["name"]
    assert set(tasks) | set(spec["components"][inner]["dag"]["tasks"]) >= {*STAGES, "condition-1"}
    # promote runs only when the gate said so.
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert "register-Output" in condition and "'promote'" in condition
    # Registry writes and input identification never come from a cache.
    assert tasks["identify"]["cachingOptions"] == {}
    assert tasks["register"]["cachingOptions"] == {}
    assert tasks["prep"]["cachingOptions"] == {"enableCache": True}
    # tune and train retry with backoff; the others fail fast.
    for name in ("tune", "train"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2
        assert tasks[name]["retryPolicy"]["backoffDuration"] == "60s"
    assert "retryPolicy" not in tasks["prep"]


def test_stage_settings_reach_the_pods(tmp_path):
    config = load_config(
        "configs/demo.yaml",
        [
            "pipeline.image=registry.example.com/ftpipe:abc",
            "pipeline.stages.train.image=registry.example.com/ftpipe-cuda:abc",
            "pipeline.stages.train.gpu=1",
            "pipeline.stages.train.memory=32G",
            "pipeline.stages.train.node_selector={pool: gpu}",
            "pipeline.stages.train.tolerations=[{key: nvidia.com/gpu, effect: NoSchedule}]",
            "pipeline.stages.tune.retries=0",
        ],
    )
    spec, platform = _documents(compile_pipeline(config, tmp_path / "p.yaml"))
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["image"] == "registry.example.com/ftpipe-cuda:abc"
    assert executors["exec-prep"]["container"]["image"] == "registry.example.com/ftpipe:abc"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["resources"]["memoryLimit"] == 32.0
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert k8s["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["tune"]
    # Ray clients carry the label infra/'s NetworkPolicy admits, and the Ray token; every
    # stage that talks to MLflow gets its credentials; prep gets neither.
    assert k8s["podMetadata"]["labels"] == {"ftpipe.io/ray-client": "true"}
    mounted = {s["secretName"]: s["keyToEnv"] for s in k8s["secretAsEnv"]}
    assert mounted["ray-auth-token"] == [{"envVar": "RAY_AUTH_TOKEN", "secretKey": "auth_token"}]
    assert "mlflow-client-credentials" in mounted
    executors_k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "exec-prep" not in executors_k8s
    assert "podMetadata" not in executors_k8s["exec-register"]


def test_every_component_ships_the_helpers_its_body_calls(tmp_path):
    # A stage's pod has ftpipe but not components/: the body's helpers travel in its program.
    spec, _ = _documents(compile_pipeline(load_config("configs/demo.yaml"), tmp_path / "p.yaml"))
    for name, executor in spec["deploymentSpec"]["executors"].items():
        program: dict = {}
        exec(compile(executor["container"]["command"][-1], name, "exec"), program)
        assert program["tracking_overrides"]("http://mlflow:5000") == [
            "registry.tracking_uri=http://mlflow:5000"
        ], name
        assert program["tracking_overrides"]("") == [], name
