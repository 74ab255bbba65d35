"""Ray Train + DeepSpeed on a real local Ray cluster with 2 CPU workers and a tiny model."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from ftpipe.train.ray_train import train_ray
from tests.helpers import train_config
from tests.unit.train.test_core import export_metrics

pytestmark = pytest.mark.integration

TWO_WORKERS = ("train.num_workers=2", "train.batch_size=8")


def slow(value):
    """A parameter that only `make test-all` runs."""
    return pytest.param(value, marks=pytest.mark.slow)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    from ftpipe.train.ray_cluster import ensure_ray

    ensure_ray(None)  # the local Ray `ftpipe train` starts
    yield
    ray.shutdown()


# Two workers on one machine run in make test-all (each case 20 to 45 s on 2 cores). make test
# keeps 2 workers at ZeRO-0 on the multi-node cluster (tests/cluster), ZeRO-3 in one process
# (tests/unit/train/test_core.py) and the in-place gradient average in 2 ranks (test_reduction).
@pytest.mark.parametrize("zero_stage", [slow(0), slow(2), slow(3)])
def test_two_workers_learn_and_export_what_they_measured(tmp_path, tiny_model_dir, zero_stage):
    config = train_config(tmp_path, tiny_model_dir, *TWO_WORKERS,
                          f"train.zero_stage={zero_stage}")  # fmt: skip
    outcome = train_ray(config)

    assert outcome.final_metrics["step"] == 42  # 60 train rows / 8 per step = 7 x 6 epochs
    losses = [entry["loss"] for entry in outcome.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert outcome.metrics["accuracy"] > 0.9
    exported = export_metrics(outcome.model_dir, config)
    assert exported["accuracy"] == pytest.approx(outcome.metrics["accuracy"], abs=1e-9)
    assert exported["loss"] == pytest.approx(outcome.metrics["loss"], rel=1e-4)
    # Under ZeRO every rank wrote its own optimizer shard into the (merged) checkpoint.
    checkpoint = Path(outcome.best_checkpoint)
    shards = list(checkpoint.rglob("*optim_states.pt"))
    assert len(shards) == (2 if zero_stage else 0), shards
    assert list(checkpoint.glob("rng-rank*.safetensors")) and (checkpoint / "model").is_dir()


@pytest.mark.parametrize("zero_stage", [slow(0), slow(2)])
def test_two_workers_fit_one_cached_head_like_scikit_learn(tmp_path, tiny_model_dir, zero_stage):
    import numpy as np
    from sklearn.metrics import log_loss

    from ftpipe.data.prepared import load_prepared
    from tests.unit.train.test_head_fit import sklearn_head

    config = train_config(tmp_path, tiny_model_dir, *TWO_WORKERS, f"train.zero_stage={zero_stage}",
                          "strategy.name=feature-extraction")  # fmt: skip
    outcome = train_ray(config)

    assert [entry["step"] for entry in outcome.history] == [1]
    # Each rank scored its half of the eval split with its own copy of the head: the export
    # scoring the same shows the ranks ended with one head.
    exported = export_metrics(outcome.model_dir, config)
    assert exported["accuracy"] == pytest.approx(outcome.metrics["accuracy"], abs=1e-9)
    assert exported["loss"] == pytest.approx(outcome.metrics["loss"], rel=1e-4)
    (cache,) = (tmp_path / "cache").iterdir()
    splits = load_prepared(config.data.output_dir).splits
    features = {name: np.load(cache / f"{name}.npy") for name in ("train", "eval")}
    probs = sklearn_head(features["train"], splits["train"].labels, config.train.weight_decay
                         ).predict_proba(features["eval"])  # fmt: skip
    expected = log_loss(splits["eval"].labels, probs, labels=[0, 1])
    assert outcome.metrics["loss"] == pytest.approx(expected, rel=0.01)


def train_worker_pids() -> list[int]:
    """Processes Ray titled as Ray Train workers (`ray::RayTrainWorker...`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return sorted(pids)


def kill_a_worker_mid_run(run_dir: Path, killed: list[int]) -> None:
    """SIGKILL one Ray Train worker process once a checkpoint is surely registered.

    A checkpoint directory appears while it is being uploaded, and the controller registers it
    on its next poll of the workers; by the time four have appeared, the first ones are
    registered (the run writes ten).
    """
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(run_dir.glob("checkpoint_*"))) < 4:
        time.sleep(0.05)
    workers = train_worker_pids()
    if workers:
        os.kill(workers[-1], signal.SIGKILL)
        killed.append(workers[-1])


@pytest.mark.slow
def test_a_killed_worker_resumes_at_the_last_checkpoint_and_matches(tmp_path, tiny_model_dir):
    settings = (*TWO_WORKERS, "train.eval_every_steps=10", "train.max_failures=2")
    whole = train_ray(train_config(tmp_path / "whole", tiny_model_dir, *settings))

    config = train_config(tmp_path / "killed", tiny_model_dir, *settings)
    killed: list[int] = []
    run_dir = Path(config.train.output_dir).absolute() / "ray" / "faulty"
    killer = threading.Thread(target=kill_a_worker_mid_run, args=(run_dir, killed))
    killer.start()
    outcome = train_ray(config, run_name="faulty")
    killer.join()

    assert killed, "no worker was killed"
    final = outcome.final_metrics
    assert final["step"] == whole.final_metrics["step"] == 42
    # The restarted workers began at a checkpoint's step (every 10 steps and at each 7-step
    # epoch end), not at step 0.
    assert final["start_step"] > 0
    assert final["start_step"] % 10 == 0 or final["start_step"] % 7 == 0
    # Same seed, same data order, restored optimizer and RNG: the same model (tolerance 1e-6).
    for key in ("loss", "accuracy", "macro_f1"):
        assert final[key] == pytest.approx(whole.final_metrics[key], abs=1e-6)
