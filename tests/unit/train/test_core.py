"""The training core in one process (no Ray): learning, export, resume, determinism, cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ftpipe.data.prepared import batches, load_prepared
from ftpipe.errors import FtpipeError
from ftpipe.tasks.sequence_classification import classification_metrics
from ftpipe.train.export import Export, load_export, predict_logits
from ftpipe.train.local import train_local
from tests.helpers import REPO, train_config


def export_metrics(model_dir: str, config) -> dict[str, float]:
    """Metrics of the exported model on the eval split, computed outside the training code."""
    data = load_prepared(config.data.output_dir)
    model, _ = load_export(Export.open(model_dir))
    split = data.splits["eval"]
    logits = [predict_logits(model, batch) for _, batch in batches(split, 7, 0)]
    return classification_metrics(torch.cat(logits).numpy(), split.labels, data.labels.names)


@pytest.mark.parametrize(
    ("strategy", "overrides", "kind"),
    [
        ("full", (), "transformers"),
        ("full", ("train.zero_stage=3",), "transformers"),
        ("feature-extraction", ("train.feature_cache=false",), "pooled-classifier"),
        ("lora", ("strategy.merge_adapter=true",), "transformers"),
        ("lora", ("strategy.merge_adapter=false",), "peft"),
    ],
    ids=["full", "full-zero3", "feature-extraction", "lora-merged", "lora-adapter"],
)
def test_loss_decreases_and_the_export_predicts_like_the_trained_model(
    tmp_path, tiny_model_dir, strategy, overrides, kind
):
    config = train_config(tmp_path, tiny_model_dir, f"strategy.name={strategy}", *overrides)
    outcome = train_local(config)

    latest = max(Path(outcome.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    losses = [entry["loss"] for entry in history]
    assert losses[-1] < losses[0] * 0.8, losses
    manifest = json.loads((Path(outcome.model_dir) / "ftpipe.json").read_text())
    assert manifest["kind"] == kind
    assert not list(Path(outcome.model_dir).rglob("*.bin")), "weights must be safetensors only"
    # The export scores exactly what the training loop measured for the best checkpoint.
    exported = export_metrics(outcome.model_dir, config)
    assert exported["accuracy"] == pytest.approx(outcome.metrics["accuracy"], abs=1e-9)
    assert exported["loss"] == pytest.approx(outcome.metrics["loss"], rel=1e-4)
    if kind == "transformers" and strategy == "lora":
        assert (Path(outcome.model_dir) / "adapter" / "adapter_model.safetensors").exists()


def test_a_prompt_learning_export_keeps_its_adapter_and_predicts_as_trained(
    tmp_path, tiny_model_dir
):
    from ftpipe.train.predictor import Predictor

    # strategy.merge_adapter unset: virtual tokens cannot merge, so the adapter is the export
    config = train_config(tmp_path, tiny_model_dir, "strategy.name=p-tuning", "train.epochs=1")
    outcome = train_local(config)
    model_dir = Path(outcome.model_dir)
    assert json.loads((model_dir / "ftpipe.json").read_text())["kind"] == "peft"
    assert not (model_dir / "adapter_config.json").exists(), "an adapter saved as the model"
    exported = export_metrics(model_dir, config)
    assert exported["loss"] == pytest.approx(outcome.metrics["loss"], rel=1e-4)
    table = Predictor.load(model_dir).predict(["good hello help please"])
    assert table["label"].tolist()[0] in {"good", "bad"}


def test_plain_transformers_loads_the_export(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    outcome = train_local(train_config(tmp_path, tiny_model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(outcome.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(outcome.model_dir)
    inputs = tokenizer(["good hello help please", "bad late crash twice"], return_tensors="pt")
    assert model(**inputs).logits.argmax(-1).tolist() == [
        model.config.label2id["good"],
        model.config.label2id["bad"],
    ]
    for name in ("label_map.json", "config.yaml", "metrics.json", "README.md"):
        assert (Path(outcome.model_dir) / name).exists()


def test_two_runs_with_one_seed_give_identical_metrics(tmp_path, tiny_model_dir):
    first = train_local(train_config(tmp_path / "a", tiny_model_dir, "train.epochs=2"))
    second = train_local(train_config(tmp_path / "b", tiny_model_dir, "train.epochs=2"))

    def metrics(outcome):  # everything but the throughput, which is wall-clock
        return {k: v for k, v in outcome.final_metrics.items() if "per_second" not in k}

    assert metrics(first) == metrics(second)


def test_resume_continues_at_the_checkpoint_step_and_matches_an_uninterrupted_run(
    tmp_path, tiny_model_dir
):
    settings = ("train.eval_every_steps=5", "train.keep_checkpoints=100")
    whole = train_local(train_config(tmp_path / "whole", tiny_model_dir, *settings))
    checkpoint = Path(whole.best_checkpoint).parent / "step-00000010"
    assert checkpoint.is_dir()

    resume = f"train.resume_from={checkpoint}"
    resumed = train_local(train_config(tmp_path / "resumed", tiny_model_dir, *settings, resume))
    assert resumed.final_metrics["start_step"] == 10
    assert resumed.final_metrics["step"] == whole.final_metrics["step"]
    for key in ("loss", "accuracy", "macro_f1"):
        assert resumed.final_metrics[key] == pytest.approx(whole.final_metrics[key], abs=1e-6)


def test_a_head_fit_on_the_cache_scores_the_same_on_the_live_backbone(tmp_path, tiny_model_dir):
    runs = {}
    for cache in (True, False):
        settings = ("strategy.name=feature-extraction", f"train.feature_cache={cache}")
        config = train_config(tmp_path / str(cache), tiny_model_dir, *settings)
        runs[cache] = (config, train_local(config))
    assert list((tmp_path / "True" / "cache").iterdir()), "the cache was not written"
    assert not (tmp_path / "False" / "cache").exists()
    # The export runs the live backbone: the cached features must be exactly what it computes.
    config, cached = runs[True]
    exported = export_metrics(cached.model_dir, config)
    assert exported["accuracy"] == pytest.approx(cached.metrics["accuracy"], abs=1e-9)
    assert exported["loss"] == pytest.approx(cached.metrics["loss"], rel=1e-4)
    # Without the cache the head trains step by step, through the backbone, as before.
    assert runs[False][1].final_metrics["step"] > 1 == cached.final_metrics["step"]


def test_feature_extraction_leaves_the_backbone_bit_identical(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    config = train_config(tmp_path, tiny_model_dir, "strategy.name=feature-extraction")
    outcome = train_local(config)
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(Path(outcome.model_dir) / "model.safetensors"))
    for name, tensor in after.items():
        assert torch.equal(tensor, before[f"bert.{name}"]), name


def test_the_core_runs_with_ray_unimportable(tmp_path, tiny_model_dir):
    config = train_config(tmp_path, tiny_model_dir, "train.epochs=1")
    script = (
        "import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
        "from ftpipe.config.load import validate_config\n"
        "from ftpipe.train.local import train_local\n"
        f"config = validate_config({config.model_dump(mode='json')!r})\n"
        "outcome = train_local(config)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'ray' and sys.modules[m]]\n"
        "print('step', outcome.final_metrics['step'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 7" in done.stdout


def test_rank_shards_are_disjoint_equal_and_reshuffled_each_epoch():
    from ftpipe.train.batching import eval_shard, rank_order

    lengths = np.random.default_rng(0).integers(1, 64, size=101)
    shards = [rank_order(lengths, seed=1, epoch=0, rank=r, world_size=2, per_rank=8)
              for r in range(2)]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == 48  # 6 whole steps of 2 x 8 rows
    assert not set(shards[0]) & set(shards[1])
    assert not np.array_equal(shards[0], rank_order(lengths, 1, 1, 0, 2, 8))
    rows, real = eval_shard(5, rank=1, world_size=2)
    assert rows.tolist()[:real] == [1, 3] and len(rows) == 3


def test_steps_keep_the_shuffles_rows_and_deal_them_by_length():
    from ftpipe.train.batching import rank_order

    lengths = np.random.default_rng(0).integers(1, 64, size=200)
    per_rank, world = 8, 4
    shuffle = np.random.default_rng([3, 0]).permutation(200)
    shards = [rank_order(lengths, 3, 0, r, world, per_rank) for r in range(world)]
    for step in range(200 // (per_rank * world)):
        dealt = [shard[step * per_rank : (step + 1) * per_rank] for shard in shards]
        # the step reads exactly the shuffle's rows for that step, so its gradient is unchanged
        expected = shuffle[step * per_rank * world : (step + 1) * per_rank * world]
        assert sorted(np.concatenate(dealt).tolist()) == sorted(expected.tolist())
        # each rank reads its rows shortest first, and the ranks' token counts stay close
        for rows in dealt:
            assert np.all(np.diff(lengths[rows]) >= 0)
        tokens = [int(lengths[rows].sum()) for rows in dealt]
        assert max(tokens) - min(tokens) <= lengths[expected].max() - lengths[expected].min()


def test_length_grouped_steps_read_the_same_rows_with_less_padding():
    from ftpipe.train.batching import POOL_STEPS, rank_order

    # 4,100 rows: 256 whole steps of 16 and 4 rows left out, which must be the shuffle's own
    # leftovers in both modes (random rows), never the longest rows of a sorted pool
    lengths = np.random.default_rng(0).integers(2, 64, size=4100)
    per_rank, world = 8, 2

    def read(grouped: bool, epoch: int = 0) -> tuple[int, list[int]]:
        shards = [rank_order(lengths, 5, epoch, r, world, per_rank, grouped) for r in range(world)]
        batches = [shard.reshape(-1, per_rank) for shard in shards]
        padded = sum(int(lengths[b].max(axis=1).sum()) * per_rank for b in batches)
        return padded, sorted(np.concatenate(shards).tolist())

    plain, plain_rows = read(False)
    grouped, grouped_rows = read(True)
    assert grouped_rows == plain_rows and len(grouped_rows) == 4096 == len(set(grouped_rows))
    assert read(True, epoch=1)[1] != grouped_rows  # each epoch leaves out other rows
    assert grouped < 0.6 * plain  # a random step pads to its longest row; a grouped one barely
    again = rank_order(lengths, 5, 0, 0, world, per_rank, True)
    assert np.array_equal(again, rank_order(lengths, 5, 0, 0, world, per_rank, True))
    # the steps are shuffled across pools: the first pool's worth of steps does not run from
    # short to long, as the sorted pool itself would
    first_pool = lengths[again.reshape(-1, per_rank)[:POOL_STEPS]].mean(axis=1)
    assert not np.all(np.diff(first_pool) >= 0)


def test_early_stopping_keeps_the_best_and_bounds_the_checkpoints(tmp_path, tiny_model_dir):
    # Loss on a separable set keeps falling; accuracy saturates at 1.0 and then ties, so
    # early stopping on accuracy stops a few evaluations after it first reaches the top.
    settings = ("train.metric=accuracy", "train.patience=2", "train.eval_every_steps=2",
                "train.keep_checkpoints=1", "train.epochs=20")  # fmt: skip
    outcome = train_local(train_config(tmp_path, tiny_model_dir, *settings))
    stopped_at = outcome.final_metrics["step"]
    assert stopped_at < 20 * 7, "early stopping never triggered"
    assert outcome.metrics["step"] == stopped_at - 2 * 2  # best, then 2 evals without gain
    kept = sorted(p.name for p in Path(outcome.best_checkpoint).parent.iterdir())
    assert kept == [f"step-{outcome.metrics['step']:08d}", f"step-{stopped_at:08d}"]
    assert (Path(outcome.best_checkpoint) / "model").is_dir()


def test_max_train_rows_keeps_a_stratified_sample(tmp_path, tiny_model_dir):
    config = train_config(tmp_path, tiny_model_dir, "data.max_train_rows=20")
    labels = load_prepared(config.data.output_dir).splits["train"].labels
    assert len(labels) == 20 and np.bincount(labels).tolist() == [10, 10]


def test_training_before_prep_or_recommend_is_a_clear_error(tmp_path, tiny_model_dir):
    from tests.helpers import ftpipe

    config = train_config(tmp_path, tiny_model_dir)
    path = tmp_path / "c.yaml"
    missing = tmp_path / "nowhere"
    path.write_text(
        f"data: {{train: {config.data.train}, output_dir: {missing}}}\n"
        f"model: {{name: {tiny_model_dir}}}\n"
        f"recommend: {{output_dir: {tmp_path / 'no-recommendation'}}}\n"
        f"train: {{output_dir: {tmp_path / 'train'}}}\n"
        f"registry: {{tracking_uri: 'sqlite:///{tmp_path / 'mlflow.db'}'}}\n"
    )
    done = ftpipe("train", "-c", str(path), "strategy.name=full", "--no-ray")
    assert done.returncode == 2 and "Run `ftpipe prep`" in done.stderr
    done = ftpipe("train", "-c", str(path), "--no-ray")
    assert done.returncode == 2 and "ftpipe recommend" in done.stderr


def test_zero2_with_the_optimizer_offloaded_to_the_host_learns(tmp_path, tiny_model_dir):
    settings = ("train.zero_stage=2", "train.offload_optimizer=true", "train.epochs=3")
    outcome = train_local(train_config(tmp_path, tiny_model_dir, *settings))
    latest = max(Path(outcome.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"]


def test_a_resumed_run_exports_even_if_it_never_improves(tmp_path, tiny_model_dir):
    # On accuracy the run saturates at 1.0 early, so no evaluation after a late resume is
    # better than the restored best: the resumed run must still leave a model behind.
    settings = ("train.metric=accuracy", "train.eval_every_steps=5", "train.keep_checkpoints=100")
    whole = train_local(train_config(tmp_path / "whole", tiny_model_dir, *settings))
    late = sorted(Path(whole.best_checkpoint).parent.glob("step-*"))[-2]
    resume = f"train.resume_from={late}"
    resumed = train_local(train_config(tmp_path / "resumed", tiny_model_dir, *settings, resume))
    assert (Path(resumed.model_dir) / "ftpipe.json").exists()
    assert resumed.final_metrics["step"] == whole.final_metrics["step"]

    last = sorted(Path(whole.best_checkpoint).parent.glob("step-*"))[-1]
    done = f"train.resume_from={last}"
    with pytest.raises(FtpipeError, match="nothing is left to train"):
        train_local(train_config(tmp_path / "again", tiny_model_dir, *settings, done))
