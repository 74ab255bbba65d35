"""GPU validation on one lent GPU: SST-2 at full size, a ~1B decoder through the core vs HF.

One call runs every case, each in its own process (a crash or OOM stays in its case), and
prints a table at the end:

* peak: the measured bf16 matmul rate (8192^3 torch.matmul, CUDA events, median), which the
  MFU figures divide by.
* sst2: full fine-tuning of MiniLM-L6 (bf16 copy of the packaged model) on all of GLUE
  SST-2's training rows, 3 epochs, max_length 128, evaluated on the 872 dev rows: data
  prepared by `ftpipe.data.run_prep` from configs/sst2.yaml, trained by
  `ftpipe.train.loop.train`.
* llm-z0 / llm-z2 / llm-lora: a random-init Llama-style decoder (hidden 2048, 20 layers,
  16 heads, 8 KV heads, MLP 5632, vocab 32000: 1.08B parameters), causal LM on random
  2048-token rows, bf16, through `ftpipe.train.loop.train` with DeepSpeed ZeRO-0, ZeRO-2,
  and LoRA (r=16 on every linear layer, ZeRO-0).
* llm-hf: the same model, rows, micro-batch, accumulation and sequence length through a plain
  `transformers.Trainer` (fp32 weights, bf16 autocast, its default fused AdamW).
* profile: where one fwd+bwd+AdamW step of that model spends its GPU time (torch.profiler,
  kernels grouped by kind); plain torch, for the "what holds MFU back" note.
* sst2-profile: 150 SST-2 steps of the core under cProfile (ZeRO-2, ZeRO-0) and under
  torch.profiler (GPU kernel time per step), for the "what holds SST-2 back" note.

The sst2 case first probes ZeRO-0 and ZeRO-2 (120 steps each) and runs the faster; when the
full 3-epoch schedule does not fit the time left, it caps train.max_steps at what fits and
says so in the table.

Throughput is steady state: the core's own clock (TrainResult.train_seconds, read per step off
its progress log records) between the end of the warm-up steps and the last step; the
Trainer's between the same steps (synchronised in a callback). MFU counts
6·N + 12·L·h·s FLOPs per token (N: weights of every matmul, the output layer included and the
input embedding table excluded; L layers, h hidden size, s sequence length: full attention
scores, the PaLM convention), over the measured matmul peak.

On the GPU machine (see docs/benchmarks.md for what to carry):

    PYTHONPATH=src python3 bench/gpu.py --data .carry --out $OUT [--quick] [--cases ...]

Here, to write the GPU section of docs/benchmarks.md from its results:

    .venv/bin/python bench/gpu.py --render results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
LLAMA = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
TINY_LLAMA = {  # --smoke: exercises every code path on a CPU in seconds
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {"mfu": 0.45, "vs_hf": 1.0, "sst2_accuracy": 0.910, "sst2_seconds": 180.0}
PROBE_STEPS, PROBE_WARM = 120, 20  # SST-2 ZeRO-stage probes: steps, warm-up steps left out
PEAK_KEYS = ("peak_allocated_gib", "peak_reserved_gib")
CASES = ("peak", "make-llama", "llm-z0", "llm-z2", "llm-lora", "llm-hf", "sst2", "profile",
         "sst2-profile")  # fmt: skip
CASE_SECONDS = {  # rough minimum each needs; a case is skipped when less time is left
    "peak": 20, "sst2": 120, "make-llama": 30, "llm-z0": 60, "llm-z2": 60,
    "llm-lora": 45, "llm-hf": 50, "profile": 30, "sst2-profile": 60,
}  # fmt: skip


# ----------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes for this run: full, --quick (short runs, real sizes) or --smoke (tiny, CPU)."""
    smoke = args.smoke
    return {
        "llama": TINY_LLAMA if smoke else LLAMA,
        "seq": 64 if smoke else args.seq,
        "micro": 2 if smoke else args.micro,
        "accum": 1 if (smoke or args.quick) else args.accum,
        "warmup": 1 if smoke else args.warmup,
        "steps": 3 if smoke else (3 if args.quick else args.steps),
        "sst2_max_steps": 5 if smoke else (300 if args.quick else None),
    }


def llama_flops_per_token(llama: dict[str, int], seq: int) -> dict[str, float]:
    """Training FLOPs per token: 6N (matmul weights) plus attention scores (12·L·h·s)."""
    h, inter, layers = llama["hidden_size"], llama["intermediate_size"], llama["num_hidden_layers"]
    kv = h // llama["num_attention_heads"] * llama["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    matmul_params = layers * per_layer + h * llama["vocab_size"]  # + the output layer
    attention = 12 * layers * h * seq
    return {
        "matmul_params": matmul_params,
        "dense": 6 * matmul_params,
        "attention": attention,
        "total": 6 * matmul_params + attention,
        "total_causal": 6 * matmul_params + attention / 2,
    }


def peak_memory() -> dict[str, float]:
    """Peak allocated / reserved GPU memory so far, GiB."""
    import torch

    if not torch.cuda.is_available():
        return {"peak_allocated_gib": 0.0, "peak_reserved_gib": 0.0}
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


class StepClock(logging.Handler):
    """Reads the core's progress records: step, loss and its own train-seconds clock.

    The loop logs `step %d/%d ... %.1f samples/s` with rate = rows / train_seconds; the raw
    record arguments give train_seconds exactly. Observes only: nothing in the core changes.
    """

    def __init__(self, global_batch: int) -> None:
        super().__init__(logging.INFO)
        self.global_batch = global_batch
        self.steps: list[dict[str, float]] = []
        logger = logging.getLogger("ftpipe.train.loop")
        logger.setLevel(logging.INFO)
        logger.addHandler(self)

    def close(self) -> None:
        logging.getLogger("ftpipe.train.loop").removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith("step %d/%d"):
            return
        done, _total, _epoch, loss, _lr, rate = record.args[:6]
        self.steps.append(
            {
                "step": done,
                "loss": float(loss),
                # rate = rows since the start (step 0 here: no resume) / train_seconds
                "train_seconds": done * self.global_batch / max(rate, 1e-12),
                **peak_memory(),
            }
        )

    def steady(self, warmup: int) -> tuple[int, float]:
        """(steps, seconds) from the end of step `warmup` to the last step."""
        marks = {s["step"]: s["train_seconds"] for s in self.steps}
        last = max(marks)
        return last - warmup, marks[last] - marks[warmup]


def random_rows(rows: int, seq: int, vocab: int, seed: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(3, vocab, size=(rows, seq)).tolist()


# ----------------------------------------------------------------------------------------
# Cases (each runs in its own process)
# ----------------------------------------------------------------------------------------


def case_peak(args: argparse.Namespace) -> dict[str, Any]:
    """Measured bf16 matmul rate and what the device is."""
    import torch

    info = device_info()
    if not torch.cuda.is_available():
        return info | {"peak_tflops": None}
    n, iters = 8192, 20
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty_like(a)
    warm_until = time.perf_counter() + 3.0  # clocks ramp up from idle: warm for seconds
    while time.perf_counter() < warm_until:
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
    seconds = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3 / iters)
    rates = [2 * n**3 / s / 1e12 for s in seconds]
    # The rate depends on the data (power draw) and the shape: also uniform [0, 1) data, and
    # the decoder's own MLP product (16384 tokens x 2048 -> 5632).
    variants = {
        "8192^3 uniform[0,1)": matmul_rate(torch.rand(n, n), torch.rand(n, n)),
        "16384x2048x5632 randn": matmul_rate(torch.randn(16384, 2048), torch.randn(2048, 5632)),
    }
    return info | {
        "peak_tflops": statistics.median(rates),
        "peak_tflops_range": [min(rates), max(rates)],
        "peak_variants_tflops": variants,
        "peak_shape": f"{n}x{n}x{n} bf16, random data, 3 s warm-up, median of 7 x {iters}",
    }


def matmul_rate(a, b, iters: int = 20) -> float:
    """Median TFLOP/s of a bf16 a @ b on the GPU (after a second of warm-up)."""
    import torch

    a, b = a.cuda().bfloat16(), b.cuda().bfloat16()
    c = a @ b
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
    rates = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        rates.append(
            2
            * a.shape[0]
            * a.shape[1]
            * b.shape[1]
            * iters
            / (start.elapsed_time(end) / 1e3)
            / 1e12
        )
    return statistics.median(rates)


def case_sst2_profile(args: argparse.Namespace) -> dict[str, Any]:
    """Where an SST-2 step of the core spends its time: Python (cProfile) and GPU (kernels).

    Three short runs of the core on the prepared SST-2 data (150 steps each): ZeRO-2 and
    ZeRO-0 under cProfile, and ZeRO-2 under torch.profiler for the GPU kernel time per step.
    """
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ftpipe.config import load_config
    from ftpipe.data import run_prep
    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.loop import RankContext, train

    data, work = Path(args.data).resolve(), Path(args.work) / "sst2-profile"
    steps, warm = (6, 2) if args.smoke else (150, 50)

    def configure(name: str, zero: int):
        return load_config(
            REPO / "configs" / "sst2.yaml",
            [f"data.train={data / 'sst2' / 'train.tsv'}", f"data.eval={data / 'sst2' / 'dev.tsv'}",
             "data.max_length=128", f"data.output_dir={work / 'prep'}",
             f"model.name={data / 'minilm-bf16'}", "strategy.name=full", "train.num_workers=1",
             f"train.output_dir={work / name}", f"train.cache_dir={work / 'cache'}",
             f"train.zero_stage={zero}", f"train.max_steps={steps}",
             f"train.log_every_steps={warm}"],
        )  # fmt: skip

    prepared = load_prepared(run_prep(configure("x", 2)).output_dir)
    out: dict[str, Any] = {"steps": steps}
    for zero in (2, 0):
        config = configure(f"cprofile-z{zero}", zero)
        clock = StepClock(config.train.batch_size)
        profiler = cProfile.Profile()
        profiler.enable()
        train(config, prepared, RankContext(), lambda _m, _s: None)
        profiler.disable()
        clock.close()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
        stats.print_stats(25)
        out[f"z{zero}_cprofile_tottime"] = text.getvalue()[-6000:]
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        out[f"z{zero}_cprofile_cumulative"] = text.getvalue()[-9000:]
        n, secs = clock.steady(warm)
        out[f"z{zero}_seconds_per_step_under_cprofile"] = secs / n
    if torch.cuda.is_available():
        config = configure("kernels-z2", 2)
        clock = StepClock(config.train.batch_size)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            train(config, prepared, RankContext(), lambda _m, _s: None)
        clock.close()
        n, secs = clock.steady(warm)
        kernel_ms = (
            sum((getattr(e, "device_time_total", 0) or 0) for e in prof.key_averages()) / 1e3
        )
        out["z2_seconds_per_step_under_torch_profiler"] = secs / n
        out["z2_gpu_kernel_ms_whole_run"] = kernel_ms
        out["z2_gpu_kernel_ms_per_step_incl_eval"] = kernel_ms / steps
        out["z2_kernel_launches"] = sum(e.count for e in prof.key_averages())
    return out


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "packages": {},
    }
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers", "deepspeed", "peft", "accelerate", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            info["packages"][name] = version(name)
    info["packages"]["torch"] = torch.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": props.total_memory / 2**30,
            "sms": props.multi_processor_count,
            "cuda": torch.version.cuda,
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                 "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo.read_text()).group(1))
        info["ram_gib"] = kib / 2**20
    return info


def case_sst2(args: argparse.Namespace) -> dict[str, Any]:
    """Full fine-tuning of MiniLM on all of SST-2 through ftpipe's prep and training core.

    Unless --sst2-zero names a stage, two short probes (ZeRO-0 and ZeRO-2, 120 steps each)
    pick the faster stage first. With --deadline, the run is capped at the optimizer steps
    that fit before it (train.max_steps: the schedule then spans the shorter run).
    """
    from ftpipe.config import load_config
    from ftpipe.data import run_prep
    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.loop import RankContext, train

    s = settings(args)
    data, work = Path(args.data).resolve(), Path(args.work) / "sst2"

    def configure(name: str, *extra: str):
        overrides = [
            f"data.train={data / 'sst2' / 'train.tsv'}",
            f"data.eval={data / 'sst2' / 'dev.tsv'}",
            "data.max_length=128",
            f"data.output_dir={work / 'prep'}",
            f"model.name={data / 'minilm-bf16'}",
            "strategy.name=full",
            "train.num_workers=1",
            f"train.output_dir={work / name}",
            f"train.cache_dir={work / 'cache'}",
            *args.sst2_override,
            *extra,
        ]
        return overrides, load_config(REPO / "configs" / "sst2.yaml", overrides)

    _, config = configure("train")
    started = time.perf_counter()
    prep = run_prep(config)
    prep_seconds = time.perf_counter() - started
    prepared = load_prepared(prep.output_dir)
    steps_per_epoch = len(prepared.splits["train"]) // config.train.batch_size
    full_steps = steps_per_epoch * config.train.epochs

    probes: dict[int, float] = {}
    zero = args.sst2_zero
    if zero == "auto" and s["sst2_max_steps"]:
        zero = str(config.train.zero_stage)
    if zero == "auto":
        for stage in (0, 2):
            extra = (
                f"train.zero_stage={stage}",
                f"train.max_steps={PROBE_STEPS}",
                f"train.log_every_steps={PROBE_WARM}",
            )
            _, probe_config = configure(f"probe-z{stage}", *extra)
            clock = StepClock(probe_config.train.batch_size)
            train(probe_config, prepared, RankContext(), lambda _m, _s: None)
            clock.close()
            steps, seconds = clock.steady(PROBE_WARM)
            probes[stage] = seconds / steps
        zero = str(min(probes, key=probes.__getitem__))

    extra = [f"train.zero_stage={zero}", "train.log_every_steps=500"]
    max_steps = s["sst2_max_steps"]
    if not max_steps and args.deadline and probes:
        # load + DeepSpeed start, then an evaluation, checkpoint and export per epoch
        fixed = 15.0 + 5.0 * config.train.epochs
        fits = int((args.deadline - time.time() - fixed) / probes[int(zero)])
        if fits < full_steps:
            max_steps = max(fits, 1)
    if max_steps:
        extra.append(f"train.max_steps={max_steps}")
    overrides, config = configure("train", *extra)
    evals: list[dict[str, Any]] = []
    train_started = time.perf_counter()
    result = train(config, prepared, RankContext(), lambda metrics, _staging: evals.append(metrics))
    train_wall = time.perf_counter() - train_started
    best = max(evals, key=lambda m: m["macro_f1"])  # what the core exports (metric=auto)
    return {
        "overrides": overrides,
        "zero_stage": int(zero),
        "probe_seconds_per_step": probes,
        "train_rows": len(prepared.splits["train"]),
        "eval_rows": len(prepared.splits["eval"]),
        "batch_size": config.train.batch_size,
        "lr": config.train.lr,
        "head_lr": config.train.head_lr,
        "epochs": config.train.epochs,
        "full_steps": full_steps,
        "steps": result.state.step,
        "epochs_done": result.state.step / steps_per_epoch,
        "prep_seconds": prep_seconds,
        "train_wall_seconds": train_wall,
        "wall_seconds": prep_seconds + train_wall,
        "train_seconds": result.train_seconds,
        "samples_per_second": result.samples_per_second,
        "tokens_per_second": result.tokens_per_second,
        "final_accuracy": result.metrics["accuracy"],
        "best_accuracy": best["accuracy"],
        "best_step": best["step"],
        "history": [
            {k: m[k] for k in ("step", "epoch", "loss", "accuracy", "macro_f1")} for m in evals
        ],
        **peak_memory(),
    }


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


def llm_data(args: argparse.Namespace, rows_per_step: int):
    """PreparedData for causal LM: random token rows, one epoch == the measured steps."""
    import numpy as np

    from ftpipe.data.prepared import PreparedData, Split

    s = settings(args)
    train_rows = random_rows(rows_per_step * s["steps"], s["seq"], s["llama"]["vocab_size"], 0)
    eval_rows = random_rows(s["micro"], s["seq"], s["llama"]["vocab_size"], 1)
    splits = {
        "train": Split(train_rows, None, np.zeros(len(train_rows), dtype=np.int64)),
        "eval": Split(eval_rows, None, np.zeros(len(eval_rows), dtype=np.int64)),
    }
    return PreparedData(splits=splits, labels=None, fingerprint="bench-gpu", stats={})


def case_llm_core(args: argparse.Namespace, strategy: str, zero: int) -> dict[str, Any]:
    """The decoder through ftpipe.train.loop.train; steady tokens/s, MFU and peak memory."""
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
    llama = s["llama"]
    if strategy != "lora":
        return None
    h, inter, layers = llama["hidden_size"], llama["intermediate_size"], llama["num_hidden_layers"]
    kv = h // llama["num_attention_heads"] * llama["num_key_value_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]
    return layers * sum(16 * (i + o) for i, o in shapes)


def case_llm_hf(args: argparse.Namespace) -> dict[str, Any]:
    """The same model, rows, micro-batch and accumulation through a plain HF Trainer."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

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
        def on_step_end(self, _args, state, _control, **_kwargs):
            if state.global_step in (s["warmup"], s["steps"]):
                if cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = {"time": time.perf_counter(), **peak_memory()}

    model = AutoModelForCausalLM.from_pretrained(
        Path(args.work) / "llama", dtype=torch.float32, use_safetensors=True
    )
    work = Path(args.work) / "hf"
    training_args = TrainingArguments(
        output_dir=str(work),
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


def case_profile(args: argparse.Namespace) -> dict[str, Any]:
    """GPU time of one bf16 fwd+bwd+AdamW step of the decoder, by kernel kind."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    s = settings(args)
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA"}
    model = AutoModelForCausalLM.from_pretrained(
        Path(args.work) / "llama", dtype=torch.bfloat16, use_safetensors=True
    ).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.tensor(random_rows(s["micro"], s["seq"], s["llama"]["vocab_size"], 2)).cuda()

    def step() -> None:
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    top: list[tuple[str, float]] = []
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if not us or event.key.startswith(("ProfilerStep", "aten::", "cudaDeviceSynchronize")):
            continue
        kind = kernel_kind(event.key)
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e3
        top.append((event.key[:90], us / 1e3))
    total = sum(kinds.values())
    top.sort(key=lambda item: -item[1])
    flops = llama_flops_per_token(s["llama"], s["seq"])
    tokens = s["micro"] * s["seq"]
    return {
        "micro": s["micro"],
        "seq": s["seq"],
        "gpu_ms": total,
        "by_kind_ms": dict(sorted(kinds.items(), key=lambda item: -item[1])),
        "top_kernels_ms": top[:12],
        "matmul_tflops_in_gemm_time": flops["dense"] * tokens / kinds.get("matmul", 1e-9) / 1e9,
    }


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ("flash", "fmha", "attention", "sdpa", "attn")):
        return "attention"
    if any(k in lowered for k in ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas")):
        return "matmul"
    if "adam" in lowered or "multi_tensor" in lowered:
        return "optimizer"
    if any(k in lowered for k in ("softmax", "nll", "cross_entropy")):
        return "loss"
    if "memcpy" in lowered or "memset" in lowered:
        return "copies"
    if "reduce" in lowered:
        return "reductions (norms)"
    return "elementwise"


# ----------------------------------------------------------------------------------------
# Orchestration, table, docs
# ----------------------------------------------------------------------------------------


def run_case(args: argparse.Namespace) -> None:
    import torch

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runners = {
        "peak": case_peak,
        "sst2": case_sst2,
        "make-llama": case_make_llama,
        "llm-z0": lambda a: case_llm_core(a, "full", 0),
        "llm-z2": lambda a: case_llm_core(a, "full", 2),
        "llm-lora": lambda a: case_llm_core(a, "lora", 0),
        "llm-hf": case_llm_hf,
        "profile": case_profile,
        "sst2-profile": case_sst2_profile,
    }
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = runners[args.case](args)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    log_path = out / "bench.log"
    deadline = time.monotonic() + args.budget
    results: dict[str, Any] = {
        "command": " ".join(["python3", "bench/gpu.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
        "settings": settings(args),
        "flops_per_token": llama_flops_per_token(settings(args)["llama"], settings(args)["seq"]),
        "cases": {},
    }
    env = dict(os.environ)
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 48 * 2**30:
        # The core checkpoints (15 GB for the 1B model: weights, fp32 master copy, Adam) into a
        # temporary directory at its last evaluation; in memory that costs seconds, not minutes.
        env["TMPDIR"] = tempfile.mkdtemp(dir=shm, prefix="bench-gpu-")
    results["tmpdir"] = env.get("TMPDIR", tempfile.gettempdir())
    for case in args.cases:
        left = deadline - time.monotonic()
        if left < CASE_SECONDS[case] * (0.3 if args.smoke else 1):
            results["cases"][case] = {"skipped": f"{left:.0f} s left of --budget"}
            print(f"[{case}] skipped: {left:.0f} s left", flush=True)
            continue
        result_path = Path(args.work) / f"{case}.json"
        result_path.unlink(missing_ok=True)
        command = [sys.executable, __file__, "--case", case, "--result", str(result_path),
                   "--deadline", str(time.time() + left - 10), *forwarded(args)]  # fmt: skip
        started = time.perf_counter()
        with log_path.open("a") as log:
            log.write(f"\n===== {case}: {' '.join(command)}\n")
            log.flush()
            try:
                done = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=left - 5
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        seconds = time.perf_counter() - started
        if code == 0 and result_path.exists():
            results["cases"][case] = json.loads(result_path.read_text()) | {
                "process_seconds": seconds
            }
        else:
            tail = log_path.read_text().splitlines()[-25:]
            results["cases"][case] = {"failed": code, "log_tail": tail, "process_seconds": seconds}
        verdict = "ok" if code == 0 else f"FAILED ({code})"
        print(f"[{case}] {verdict} in {seconds:.0f} s", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    derive(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "section.md").write_text(section_body(results))
    if env.get("TMPDIR", "").startswith(str(shm)):
        shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    return results


def forwarded(args: argparse.Namespace) -> list[str]:
    flags = ["--data", args.data, "--work", args.work, "--micro", str(args.micro),
             "--accum", str(args.accum), "--steps", str(args.steps), "--warmup",
             str(args.warmup), "--seq", str(args.seq)]  # fmt: skip
    flags += ["--quick"] * args.quick + ["--smoke"] * args.smoke
    flags += ["--sst2-zero", args.sst2_zero]
    for item in args.sst2_override:
        flags += ["--sst2-override", item]
    return flags


def derive(results: dict[str, Any]) -> None:
    """MFU and ratios from the raw case results."""
    cases = results["cases"]
    peak = cases.get("peak", {}).get("peak_tflops")
    flops = results["flops_per_token"]
    for name in ("llm-z0", "llm-z2", "llm-hf"):
        case = cases.get(name, {})
        if "tokens_per_second" in case and peak:
            achieved = case["tokens_per_second"] * flops["total"] / 1e12
            case["model_tflops"] = achieved
            case["mfu"] = achieved / peak
            case["mfu_causal"] = case["tokens_per_second"] * flops["total_causal"] / 1e12 / peak
    hf = cases.get("llm-hf", {}).get("tokens_per_second")
    for name in ("llm-z0", "llm-z2", "llm-lora"):
        case = cases.get(name, {})
        if hf and "tokens_per_second" in case:
            case["vs_hf"] = case["tokens_per_second"] / hf


def section_body(results: dict[str, Any]) -> str:
    """The markdown body of the GPU section (table, settings, targets)."""
    cases, s = results["cases"], results["settings"]
    peak = cases.get("peak", {})
    sst2 = cases.get("sst2", {})
    flops = results["flops_per_token"]
    llama = s["llama"]

    def num(value: Any, fmt: str, missing: str = "n/a") -> str:
        return missing if value is None else format(value, fmt)

    def status(case: dict[str, Any]) -> str | None:
        if "skipped" in case:
            return f"skipped ({case['skipped']})"
        if "failed" in case:
            return f"failed ({case['failed']})"
        return None

    lines = [
        f"Mode: {results['mode']}. Device: {peak.get('gpu', 'n/a')}, "
        f"{num(peak.get('gpu_memory_gib'), '.0f')} GiB, {peak.get('sms', '?')} SMs "
        f"(nvidia-smi: driver, max SM clock, power limit = {peak.get('nvidia_smi', 'n/a')}); "
        f"measured bf16 matmul peak {num(peak.get('peak_tflops'), '.0f')} TFLOP/s "
        f"({peak.get('peak_shape', '')}).",
        "",
        "| run | setting | tokens/s | samples/s | MFU | peak GPU memory | vs HF Trainer | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    if sst2:
        note = status(sst2)
        if note:
            lines.append(f"| SST-2, MiniLM-L6 full FT | | | | | | | {note} |")
        else:
            done = sst2.get("epochs_done", sst2["epochs"])
            accuracy = (
                f"dev accuracy {sst2['final_accuracy']:.2%} after {done:.2f} epochs "
                f"(exported best {sst2['best_accuracy']:.2%} at step {sst2['best_step']}); "
                f"wall {sst2['wall_seconds']:.0f} s (prep {sst2['prep_seconds']:.0f} s, "
                f"train {sst2['train_seconds']:.0f} s + load, evals, checkpoints)"
            )
            steps = f"{sst2['steps']:,}" + (
                f" of {sst2['full_steps']:,}" if sst2.get("full_steps", 0) > sst2["steps"] else ""
            )
            lines.append(
                f"| SST-2, MiniLM-L6 full FT | {sst2['train_rows']:,} rows, {steps} steps "
                f"({sst2['epochs']}-epoch schedule), batch {sst2['batch_size']}, lr "
                f"{sst2['lr']:g}, seq <= 128, bf16, ZeRO-{sst2.get('zero_stage', 0)} | "
                f"{sst2['tokens_per_second']:,.0f} (non-pad) | "
                f"{sst2['samples_per_second']:,.0f} | | "
                f"{sst2['peak_allocated_gib']:.1f} GiB | | {accuracy} |"
            )
    names = {
        "llm-z0": "1B decoder, full FT, ftpipe core, ZeRO-0",
        "llm-z2": "1B decoder, full FT, ftpipe core, ZeRO-2",
        "llm-lora": "1B decoder, LoRA r=16 (all linear), ftpipe core, ZeRO-0",
        "llm-hf": "1B decoder, full FT, HF Trainer (fp32 weights + bf16 autocast)",
    }
    for name, title in names.items():
        case = cases.get(name)
        if case is None:
            continue
        note = status(case)
        if note:
            lines.append(f"| {title} | | | | | | | {note} |")
            continue
        setting = (
            f"micro {case['micro']} x accum {case['accum']} x seq {case['seq']}, "
            f"{case['measured_steps']} steady steps"
        )
        mfu = f"{case['mfu']:.1%} ({case['mfu_causal']:.1%} causal)" if "mfu" in case else ""
        vs_hf = (
            f"{case['vs_hf']:.2f}x" if "vs_hf" in case else ("1.00x" if name == "llm-hf" else "")
        )
        result = ""
        if "losses" in case:
            result = f"loss {case['losses'][0]:.2f} -> {case['losses'][-1]:.2f}"
        if case.get("trainable"):
            result += f"; {case['trainable']:,} trainable"
        if case.get("error_after_training"):
            result += "; the final evaluation then failed (see below)"
        rows_per_s = case["tokens_per_second"] / case["seq"]
        lines.append(
            f"| {title} | {setting} | {case['tokens_per_second']:,.0f} | {rows_per_s:.1f} | "
            f"{mfu} | {case['training_peak']['peak_allocated_gib']:.1f} GiB | {vs_hf} | {result} |"
        )
    lines += [
        "",
        f"Decoder: Llama-style, random init, hidden {llama['hidden_size']}, "
        f"{llama['num_hidden_layers']} layers, {llama['num_attention_heads']} heads "
        f"({llama['num_key_value_heads']} KV), MLP {llama['intermediate_size']}, vocab "
        f"{llama['vocab_size']} ({flops['matmul_params'] / 1e9:.2f}B matmul weights, "
        f"{(flops['matmul_params'] + llama['hidden_size'] * llama['vocab_size']) / 1e9:.2f}B "
        "parameters), sdpa attention, bf16, random 2048-token rows, AdamW. MFU = tokens/s x "
        f"(6N + 12·L·h·s) / measured peak, N = {flops['matmul_params'] / 1e9:.3f}B matmul "
        f"weights (output layer in, input embeddings out): {flops['total'] / 1e9:.2f} GFLOP "
        "per token; in brackets the same with attention scores halved for the causal mask "
        f"({flops['total_causal'] / 1e9:.2f} GFLOP). tokens/s is steady state (after "
        f"{s['warmup']} warm-up optimizer steps) on the core's own clock; memory is the "
        "training peak of torch.cuda.max_memory_allocated.",
    ]
    profile = cases.get("profile", {})
    if "by_kind_ms" in profile:
        total = profile["gpu_ms"]
        kinds = ", ".join(f"{k} {v / total:.0%}" for k, v in profile["by_kind_ms"].items())
        source = f" ({profile['source']})" if profile.get("source") else ""
        lines += [
            "",
            f"Profile{source} (torch.profiler, one plain bf16 fwd+bwd+fused-AdamW step of the "
            f"decoder, micro {profile['micro']} x seq {profile['seq']}, {total:.0f} ms of GPU "
            "time): "
            f"{kinds}. The matmuls alone run at "
            f"{profile['matmul_tflops_in_gemm_time']:.0f} TFLOP/s.",
        ]
    lines += ["", *target_lines(results)]
    return "\n".join(lines) + "\n"


def target_lines(results: dict[str, Any]) -> list[str]:
    cases = results["cases"]
    z0, sst2 = cases.get("llm-z0", {}), cases.get("sst2", {})
    out = ["Targets:"]
    if "mfu" in z0:
        runs = [c for c in (z0, cases.get("llm-z2", {})) if "mfu" in c]
        best = max(runs, key=lambda c: c["mfu"])
        met = "met" if best["mfu"] >= TARGETS["mfu"] else "missed"
        out.append(
            f"- 1B full fine-tuning MFU >= 45%: {best['mfu']:.1%} "
            f"(ZeRO-{best['zero_stage']}), {met}."
        )
    if "vs_hf" in z0:
        met = "met" if z0["vs_hf"] >= TARGETS["vs_hf"] else "missed"
        out.append(f"- tokens/s >= 1.0x HF Trainer: {z0['vs_hf']:.2f}x (ZeRO-0), {met}.")
    if "final_accuracy" in sst2:
        accuracy_met = sst2["final_accuracy"] >= TARGETS["sst2_accuracy"]
        time_met = sst2["wall_seconds"] <= TARGETS["sst2_seconds"]
        done = sst2.get("epochs_done", sst2["epochs"])
        out.append(
            f"- SST-2 dev >= 91.0 in <= 3 minutes: {sst2['final_accuracy']:.2%} after "
            f"{done:.2f} epochs in "
            f"{sst2['wall_seconds']:.0f} s: accuracy {'met' if accuracy_met else 'missed'}, "
            f"time {'met' if time_met else 'missed'}."
        )
    return out


def print_table(results: dict[str, Any]) -> None:
    print("\n" + section_body(results), flush=True)


def render(path: Path, command: str, notes: str | None) -> None:
    """Write the GPU section of docs/benchmarks.md from a results.json."""
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_section

    results = json.loads(path.read_text())
    peak = results["cases"].get("peak", {})
    packages = ", ".join(f"{k} {v}" for k, v in peak.get("packages", {}).items())
    hardware = (
        f"{peak.get('gpu', 'GPU n/a')} ({peak.get('gpu_memory_gib', 0):.0f} GiB, CUDA "
        f"{peak.get('cuda', '?')}), {peak.get('cpus', '?')} cores, "
        f"{peak.get('ram_gib', 0):.0f} GiB RAM; Python {peak.get('python', '?')}; {packages}"
    )
    body = (
        f"Run on the lent GPU machine on {results['date']} with:\n\n```\n{command}\n```\n\n"
        + section_body(results)
    )
    if notes:
        body += "\n" + Path(notes).read_text().strip() + "\n"
    command = f"bench/gpu.py --render {path.name}"
    write_section("gpu", "GPU validation (1 GPU)", command, hardware, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".carry", help="Holds sst2/ and minilm-bf16/.")
    parser.add_argument("--out", default="outputs/bench-gpu", help="results.json, logs.")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "ftpipe-bench-gpu"))
    parser.add_argument("--quick", action="store_true", help="Short runs at full sizes.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes: checks the code on CPU.")
    parser.add_argument("--budget", type=float, default=540.0, help="Seconds for all cases.")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--micro", type=int, default=8, help="Decoder rows per micro-batch.")
    parser.add_argument("--accum", type=int, default=4, help="Gradient accumulation steps.")
    parser.add_argument("--steps", type=int, default=8, help="Decoder optimizer steps.")
    parser.add_argument("--warmup", type=int, default=2, help="Steps left out of tokens/s.")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--sst2-override", action="append", default=[],
                        help="Extra key=value config overrides for the SST-2 run.")  # fmt: skip
    parser.add_argument("--sst2-zero", default="auto", choices=("auto", "0", "1", "2"),
                        help="ZeRO stage of the SST-2 run; auto probes 0 and 2.")  # fmt: skip
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, help="Write docs/benchmarks.md from results.json.")
    parser.add_argument("--device-command", default="", help="With --render: the command run.")
    parser.add_argument("--notes", help="With --render: a markdown file appended to the section.")
    args = parser.parse_args()
    if args.render:
        render(args.render, args.device_command, args.notes)
        return
    if args.case:
        run_case(args)
        return
    print_table(orchestrate(args))


if __name__ == "__main__":
    main()
