"""The task layer: the registry, metric selection, targets, evaluation and serving."""

from __future__ import annotations

from types import SimpleNamespace
from typing import get_args

import numpy as np
import pytest
import torch

from ftpipe.config.load import validate_config
from ftpipe.config.schema import DataConfig
from ftpipe.errors import ConfigError, FtpipeError
from ftpipe.tasks import TASKS, LabelMap, Task, get_task, pad_rows
from ftpipe.tasks.sequence_classification import classification_metrics


def test_every_task_the_config_accepts_is_registered_and_the_earlier_name_still_works():
    assert set(get_args(DataConfig.model_fields["task"].annotation)) == set(TASKS)
    assert get_task("classification") is get_task("sequence-classification")
    with pytest.raises(ConfigError, match=r"data\.task=ner is not a task"):
        get_task("ner")


@pytest.mark.parametrize(
    ("task", "metric", "expected"),
    [
        ("sequence-classification", "auto", ("macro_f1", True)),
        ("sequence-classification", "loss", ("loss", False)),
        ("causal-lm", "auto", ("loss", False)),
        ("causal-lm", "perplexity", ("perplexity", False)),
    ],
)
def test_the_task_picks_the_selection_metric_and_its_direction(task, metric, expected):
    assert get_task(task).resolve_metric(metric) == expected


def test_a_metric_the_task_does_not_report_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"train.metric=accuracy .*causal-lm.*loss, perplexity"):
        get_task("causal-lm").resolve_metric("accuracy")


def test_padding_is_right_padding_with_a_mask():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_language_model_targets_mask_padding_and_the_prompt():
    rows = SimpleNamespace(
        labels=np.zeros(2, dtype=np.int64), prompt_lengths=np.array([2, 1]), token_labels=None
    )
    ids, mask = pad_rows([[5, 6, 7], [8, 9]], pad_id=0)
    targets = get_task("causal-lm").targets(
        rows, np.arange(2), {"input_ids": ids, "attention_mask": mask}
    )
    assert targets.tolist() == [[-100, -100, 7], [-100, 9, -100]]


def test_classification_targets_are_the_row_labels():
    rows = SimpleNamespace(labels=np.array([2, 0, 1]), prompt_lengths=None)
    targets = get_task("sequence-classification").targets(rows, np.array([2, 0]), {})
    assert targets.tolist() == [1, 2]


@pytest.fixture
def process_group():
    """A one-process gloo group, as the training core has: evaluators reduce across ranks."""
    import socket

    if torch.distributed.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    yield
    torch.distributed.destroy_process_group()


def test_the_classification_evaluator_scores_owned_rows_in_order(process_group):
    labels, names = np.array([0, 1, 1, 0]), ("a", "b")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    evaluator = get_task("sequence-classification").evaluator(
        SimpleNamespace(labels=labels, prompt_lengths=None), LabelMap(names)
    )
    # Two batches out of order, the last row a repeat this rank does not own.
    evaluator.update(logits[2:], None, np.array([2, 3]), np.array([True, True]))
    evaluator.update(logits[:2], None, np.array([0, 1]), np.array([True, True]))
    evaluator.update(logits[:1], None, np.array([0]), np.array([False]))
    assert evaluator.compute(1) == classification_metrics(logits.numpy(), labels, names)


def test_the_language_model_evaluator_averages_over_target_tokens_only(process_group):
    logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens: loss ln 4 per target token
    targets = torch.tensor([[-100, 1, -100]])
    evaluator = get_task("causal-lm").evaluator(SimpleNamespace(labels=None), None)
    evaluator.update(logits, targets, np.array([0]), np.array([True]))
    metrics = evaluator.compute(1)
    assert metrics["loss"] == pytest.approx(np.log(4))
    assert metrics["perplexity"] == pytest.approx(4.0)


def test_classification_serves_a_label_and_a_probability_per_class():
    frame = get_task("sequence-classification").predictions(
        np.array([[0.2, 0.8], [0.9, 0.1]]), ("neg", "pos")
    )
    assert frame["label"].tolist() == ["pos", "neg"]
    assert list(frame.columns) == ["label", "prob_neg", "prob_pos"]


def test_a_task_that_cannot_serve_yet_says_so_naming_the_task_and_the_stage():
    class Trainable(Task):  # a task whose models train but are not served yet
        name = "seq2seq"
        prep_columns = targets = evaluator = None

    with pytest.raises(FtpipeError, match=r"^predict needs .* data\.task=seq2seq"):
        Trainable().serving("predict")
    for name in ("sequence-classification", "token-classification", "causal-lm"):
        assert get_task(name).serving("predict") is get_task(name)


def test_a_causal_lm_is_gated_on_loss_by_default_or_on_generation_scores():
    lm = get_task("causal-lm").serving("promote")
    assert lm.gate_metric("auto") == "loss"
    assert lm.gate_metric("rouge_l") == "rouge_l" and lm.gate_metric("exact_match")
    with pytest.raises(ConfigError, match=r"promote\.metric=macro_f1 .*loss, exact_match"):
        lm.gate_metric("macro_f1")


def test_the_task_decides_which_metrics_the_promotion_gate_may_compare():
    classifier = get_task("sequence-classification").serving("promote")
    assert classifier.gate_metric("accuracy") == "accuracy"
    with pytest.raises(ConfigError, match=r"promote\.metric=loss .*macro_f1, accuracy"):
        classifier.gate_metric("loss")


def test_a_checkpoint_metric_the_task_does_not_report_fails_at_prep(tmp_path):
    raw = {"data": {"train": str(tmp_path / "t.csv"), "task": "causal-lm"}}
    get_task("causal-lm").check_config(validate_config(raw, "test"))  # train.metric=auto
    raw["train"] = {"metric": "accuracy"}
    with pytest.raises(ConfigError, match=r"train\.metric=accuracy .*data\.task=causal-lm"):
        get_task("causal-lm").check_config(validate_config(raw, "test"))
