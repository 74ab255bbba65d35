"""The ~1B decoder cases: save it, train it through the core (ZeRO-0/2, LoRA) and through HF."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..common import PEAK_KEYS, StepClock, peak_memory, random_rows, settings

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def case_make_llama(args: argparse.Namespace) -> dict[str, Any]:
    """Save the random-init decoder (bf16 safetensors, config, a tokenizer for export)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = settings(args)
    target = Path(args.work) / "llama"
    shutil.rmtree(target, ignore_errors=True)
    config = LlamaConfig(
        **s["llama"],
        max_position_embeddings=max(s["seq"], 2048),
        use_cache=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(target)
    # Export saves the base model's tokenizer beside the weights; any fast tokenizer will do.
    minilm = Path(args.data) / "minilm-bf16"
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, target / name)
    params = sum(p.numel() for p in model.parameters())
    return {"dir": str(target), "parameters": params, "config": s["llama"]}


def llm_data(args: argparse.Namespace, rows_per_step: int) -> Any:
    """PreparedData for causal LM: random token rows, one epoch == the measured steps."""
    import numpy as np

    from ftpipe.data.prepared import PreparedData, Split
    from ftpipe.tasks import get_task

    s = settings(args)
    train_rows = random_rows(rows_per_step * s["steps"], s["seq"], s["llama"]["vocab_size"], 0)
    eval_rows = random_rows(s["micro"], s["seq"], s["llama"]["vocab_size"], 1)
    splits = {
        "train": Split(train_rows, None, np.zeros(len(train_rows), dtype=np.int64)),
        "eval": Split(eval_rows, None, np.zeros(len(eval_rows), dtype=np.int64)),
    }
    return PreparedData(
        splits=splits, labels=None, fingerprint="bench-gpu", stats={}, task=get_task("causal-lm")
    )


def case_llm_core(args: argparse.Namespace, strategy: str, zero: int) -> dict[str, Any]:
    """The decoder through ftpipe.train.loop.train; steady tokens/s, MFU and peak memory.

    Args:
        args: The parsed command line.
        strategy: "full" or "lora" (r=16 on every linear layer).
        zero: DeepSpeed ZeRO stage.

    Returns:
        Sizes, steady tokens/s, losses, peak memory and trainable weights (LoRA).
    """
    from ftpipe.config.load import validate_config
    from ftpipe.train.loop import RankContext, train

    s = settings(args)
    global_batch = s["micro"] * s["accum"]
    work = Path(args.work) / f"core-{strategy}-z{zero}"
    raw = {
        "seed": 42,
        "data": {"train": "unused: rows are passed in", "output_dir": str(work / "prep")},
        "model": {"name": str(Path(args.work) / "llama")},
        "strategy": {"name": strategy},
        "train": {
            "precision": "auto",
            "zero_stage": zero,
            "batch_size": global_batch,
            "micro_batch_size": s["micro"],
            "num_workers": 1,
            "epochs": 1,
            "max_steps": s["steps"],
            "log_every_steps": 1,
            "output_dir": str(work / "train"),
            "cache_dir": str(work / "cache"),
        },
    }
    if strategy == "lora":
        raw["strategy"]["lora"] = {"r": 16, "alpha": 32, "target_modules": LORA_TARGETS}
    config = validate_config(raw)
    data = llm_data(args, global_batch)
    clock = StepClock(global_batch)
    started = time.perf_counter()
    error = None
    try:
        result = train(config, data, RankContext(), lambda _metrics, _staging: None)
        all_steps = result.tokens_per_second
    except Exception as exc:  # the steps ran; the failure came after (reported, not hidden)
        if not clock.steps or clock.steps[-1]["step"] != s["steps"]:
            raise
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).exception("train() failed after its last step")
        all_steps = None
    wall = time.perf_counter() - started
    steps, seconds = clock.steady(s["warmup"])
    tokens = steps * global_batch * s["seq"]
    return {
        "strategy": strategy,
        "zero_stage": zero,
        "micro": s["micro"],
        "accum": s["accum"],
        "seq": s["seq"],
        "measured_steps": steps,
        "steady_seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "tokens_per_second_all_steps": all_steps,
        "error_after_training": error,
        "wall_seconds": wall,
        "losses": [round(x["loss"], 4) for x in clock.steps],
        "training_peak": {k: clock.steps[-1][k] for k in PEAK_KEYS},
        "run_peak": peak_memory(),
        "trainable": trainable_count(strategy, s),
    }


def trainable_count(strategy: str, s: dict[str, Any]) -> int | None:
    """LoRA r=16 weights on every linear layer of the decoder; None for other strategies."""
    llama = s["llama"]
    if strategy != "lora":
        return None
    h, inter, layers = llama["hidden_size"], llama["intermediate_size"], llama["num_hidden_layers"]
    kv = h // llama["num_attention_heads"] * llama["num_key_value_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]
    return layers * sum(16 * (i + o) for i, o in shapes)


def hf_training_args(args: argparse.Namespace, cuda: bool) -> Any:
    """The Trainer's TrainingArguments: the core's sizes, lr 2e-5, linear schedule, bf16 AMP."""
    from transformers import TrainingArguments

    s = settings(args)
    return TrainingArguments(
        output_dir=str(Path(args.work) / "hf"),
        per_device_train_batch_size=s["micro"],
        gradient_accumulation_steps=s["accum"],
        max_steps=s["steps"],
        learning_rate=2e-5,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        bf16=cuda,
        logging_steps=s["steps"],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=42,
    )


def case_llm_hf(args: argparse.Namespace) -> dict[str, Any]:
    """The same model, rows, micro-batch and accumulation through a plain HF Trainer."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback

    s = settings(args)
    global_batch = s["micro"] * s["accum"]
    cuda = torch.cuda.is_available()
    rows = random_rows(global_batch * s["steps"], s["seq"], s["llama"]["vocab_size"], 0)

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.tensor(rows[i])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    marks: dict[int, dict[str, float]] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, _args, state, _control, **_kwargs) -> None:
            """Mark time and peak memory at the end of the warm-up and of the last step."""
            if state.global_step in (s["warmup"], s["steps"]):
                if cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = {"time": time.perf_counter(), **peak_memory()}

    model = AutoModelForCausalLM.from_pretrained(
        Path(args.work) / "llama", dtype=torch.float32, use_safetensors=True
    )
    training_args = hf_training_args(args, cuda)
    trainer = Trainer(model=model, args=training_args, train_dataset=Rows(), callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    steps = s["steps"] - s["warmup"]
    seconds = marks[s["steps"]]["time"] - marks[s["warmup"]]["time"]
    return {
        "micro": s["micro"],
        "accum": s["accum"],
        "seq": s["seq"],
        "optim": str(training_args.optim),
        "measured_steps": steps,
        "steady_seconds": seconds,
        "tokens_per_second": steps * global_batch * s["seq"] / seconds,
        "wall_seconds": wall,
        "training_peak": {k: marks[s["steps"]][k] for k in PEAK_KEYS},
    }
