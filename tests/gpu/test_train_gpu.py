"""The training core on a CUDA GPU: bf16 learning, causal LM with LoRA, ZeRO-2 resume, head fit.

Marked `gpu`: `make test` deselects them, and they skip where CUDA is missing. On a GPU
machine: `pytest -m gpu tests/gpu`. Tiny random-init models keep each test to seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from tests.helpers import separable_rows, write_csv

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LM_VOCAB = 64
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random-init 2-layer BERT classifier (fp32 safetensors) with the tiny tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=2,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("gpu-bert")
    BertForSequenceClassification(config).save_pretrained(directory)
    _copy_tokenizer(tiny_tokenizer_dir, directory)
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random-init 2-layer Llama (grouped-query attention) with the tiny tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=LM_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, pad_token_id=0, use_cache=False,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("gpu-llama")
    LlamaForCausalLM(config).save_pretrained(directory)
    _copy_tokenizer(tiny_tokenizer_dir, directory)
    return directory


def classification_config(tmp_path: Path, model_dir: Path, *overrides: str):
    """A prepared, learnable classification run on the GPU (precision auto: bf16)."""
    from ftpipe.data import run_prep

    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = {
        "seed": 7,
        "data": {
            "train": str(write_csv(tmp_path / "train.csv", separable_rows(40))),
            "output_dir": str(tmp_path / "prep"),
            "max_length": 16,
            "eval_fraction": 0.25,
            "duplicates": "keep",
        },
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        "train": {
            "batch_size": 8, "num_workers": 1, "epochs": 6, "lr": 3e-3, "head_lr": 3e-2,
            "output_dir": str(tmp_path / "train"), "cache_dir": str(tmp_path / "cache"),
            "log_every_steps": 5,
        },
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config


def counting_rows(rows: int, length: int, seed: int) -> list[list[int]]:
    """Token rows that count up (mod 16) from a random start: the next token is predictable."""
    starts = np.random.default_rng(seed).integers(0, 16, size=rows)
    return [[3 + (int(s) + k) % 16 for k in range(length)] for s in starts]


def lm_data():
    from ftpipe.data.prepared import PreparedData, Split
    from ftpipe.tasks import get_task

    splits = {
        name: Split(rows, None, np.zeros(len(rows), dtype=np.int64))
        for name, rows in (("train", counting_rows(64, 32, 0)), ("eval", counting_rows(16, 32, 1)))
    }
    return PreparedData(
        splits=splits, labels=None, fingerprint="gpu-test", stats={}, task=get_task("causal-lm")
    )


def test_bf16_full_finetuning_learns_and_exports_bf16_weights(tmp_path, bert_dir):
    from safetensors.torch import load_file

    from ftpipe.train.deepspeed import resolve_precision
    from ftpipe.train.local import train_local

    config = classification_config(tmp_path, bert_dir)
    assert resolve_precision(config.train, torch.device("cuda")) == "bf16"
    outcome = train_local(config)

    latest = max(Path(outcome.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    losses = [entry["loss"] for entry in history]
    assert losses[-1] < losses[0] * 0.8, losses
    assert outcome.metrics["accuracy"] >= 0.9, history
    # DeepSpeed trained the weights in bf16, and the export is what it trained.
    weights = load_file(str(Path(outcome.model_dir) / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}


@pytest.mark.parametrize(("strategy", "loss_ratio"), [("full", 0.3), ("lora", 0.85)])
def test_causal_lm_in_bf16_learns_to_count(tmp_path, llama_dir, strategy, loss_ratio):
    from ftpipe.train.loop import RankContext, train

    raw = {
        "seed": 3,
        "data": {"train": "unused: rows are passed in", "output_dir": str(tmp_path / "prep")},
        "model": {"name": str(llama_dir)},
        "strategy": {"name": strategy, "lora": {"r": 16, "target_modules": LORA_TARGETS}},
        "train": {
            "batch_size": 8, "num_workers": 1, "epochs": 6, "lr": 3e-3, "head_lr": 3e-2,
            "eval_every_steps": 2, "warmup_steps": 2, "output_dir": str(tmp_path / "train"),
            "cache_dir": str(tmp_path / "cache"),
        },
    }  # fmt: skip
    evals: list[dict] = []
    result = train(
        validate_config(raw), lm_data(), RankContext(), lambda metrics, _: evals.append(metrics)
    )
    losses = [m["loss"] for m in evals]
    # Frozen random embeddings and output layer leave LoRA (r=16) less to work with.
    assert losses[-1] < losses[0] * loss_ratio, losses
    assert result.tokens_per_second > 0 and result.state.step == 48


def test_zero2_checkpoint_resumes_where_it_stopped(tmp_path, bert_dir):
    from ftpipe.train.local import train_local

    settings = ("train.zero_stage=2", "train.eval_every_steps=5", "train.keep_checkpoints=100")
    whole = train_local(classification_config(tmp_path / "whole", bert_dir, *settings))
    checkpoint = Path(whole.best_checkpoint).parent / "step-00000005"
    assert list((checkpoint / "state").glob("*optim_states.pt")), "no ZeRO optimizer shard"

    resume = f"train.resume_from={checkpoint}"
    resumed = train_local(classification_config(tmp_path / "resumed", bert_dir, *settings, resume))
    assert resumed.final_metrics["start_step"] == 5
    assert resumed.final_metrics["step"] == whole.final_metrics["step"]
    # Same data order, RNG, optimizer and schedule state: the same run, up to GPU atomics.
    assert resumed.final_metrics["loss"] == pytest.approx(whole.final_metrics["loss"], rel=2e-2)
    assert resumed.final_metrics["accuracy"] == pytest.approx(
        whole.final_metrics["accuracy"], abs=0.05
    )


def test_the_cached_head_is_fit_on_the_gpu_and_exported_in_bf16(tmp_path, bert_dir):
    from safetensors.torch import load_file
    from sklearn.metrics import log_loss

    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.local import train_local
    from tests.unit.train.test_head_fit import sklearn_head

    config = classification_config(tmp_path, bert_dir, "strategy.name=feature-extraction")
    outcome = train_local(config)

    assert [entry["step"] for entry in outcome.history] == [1]
    head = load_file(str(Path(outcome.model_dir) / "head.safetensors"))
    assert {tensor.dtype for tensor in head.values()} == {torch.bfloat16}
    # Fit in fp32 on the GPU, then rounded to bf16: still scikit-learn's head on the cache.
    (cache,) = (tmp_path / "cache").iterdir()
    splits = load_prepared(config.data.output_dir).splits
    features = {name: np.load(cache / f"{name}.npy") for name in ("train", "eval")}
    probs = sklearn_head(features["train"], splits["train"].labels, config.train.weight_decay
                         ).predict_proba(features["eval"])  # fmt: skip
    assert outcome.metrics["accuracy"] == pytest.approx(
        (probs.argmax(1) == splits["eval"].labels).mean(), abs=0.005
    )
    expected = log_loss(splits["eval"].labels, probs, labels=[0, 1])
    assert outcome.metrics["loss"] == pytest.approx(expected, rel=0.2)  # bf16 logits
