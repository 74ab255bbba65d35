"""SST-2 cases: full fine-tuning of MiniLM through the core, and where its steps spend time."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..common import REPO, StepClock, peak_memory, settings

PROBE_STEPS, PROBE_WARM = 120, 20  # SST-2 ZeRO-stage probes: steps, warm-up steps left out


def sst2_config(data: Path, work: Path, name: str, *extra: str) -> tuple[list[str], Any]:
    """configs/sst2.yaml on the carried SST-2 and MiniLM, full fine-tuning, under `work`.

    Args:
        data: Holds sst2/ (train.tsv, dev.tsv) and minilm-bf16/.
        work: The case's work directory (prepared data, cache, one output per run).
        name: The run's output directory under `work`.
        *extra: Further key=value overrides, applied last.

    Returns:
        The overrides and the loaded config.
    """
    from ftpipe.config import load_config

    overrides = [
        f"data.train={data / 'sst2' / 'train.tsv'}",
        f"data.eval={data / 'sst2' / 'dev.tsv'}",
        "data.test=null",  # dev is the eval set here, as the rows have always been measured
        "data.max_length=128",
        f"data.output_dir={work / 'prep'}",
        f"model.name={data / 'minilm-bf16'}",
        "strategy.name=full",
        "train.num_workers=1",
        f"train.output_dir={work / name}",
        f"train.cache_dir={work / 'cache'}",
        *extra,
    ]
    return overrides, load_config(REPO / "configs" / "sst2.yaml", overrides)


def seconds_per_step(
    config: Any, prepared: Any, warm: int, around: contextlib.AbstractContextManager | None = None
) -> float:
    """Train `config` on `prepared` (evaluations discarded): steady seconds per step.

    Args:
        config: The run's config.
        prepared: The prepared SST-2 data.
        warm: Steps left out at the start.
        around: A context the training runs in (a profiler); none by default.

    Returns:
        Seconds per optimizer step on the core's clock, after the first `warm` steps.
    """
    from ftpipe.train.loop import RankContext, train

    clock = StepClock(config.train.batch_size)
    with around or contextlib.nullcontext():
        train(config, prepared, RankContext(), lambda _m, _s: None)
    clock.close()
    steps, seconds = clock.steady(warm)
    return seconds / steps


def pick_zero_stage(
    args: argparse.Namespace,
    default: int,
    configure: Callable[..., tuple[list[str], Any]],
    prepared: Any,
) -> tuple[str, dict[int, float]]:
    """The ZeRO stage of the SST-2 run: --sst2-zero, or the faster of two short probes.

    Short runs (--quick, --smoke) keep the config's stage instead of probing.

    Args:
        args: The parsed command line.
        default: The config's own stage.
        configure: Builds (overrides, config) from a run name and extra overrides.
        prepared: The prepared SST-2 data.

    Returns:
        The stage, and seconds per step by probed stage (empty when nothing was probed).
    """
    zero = args.sst2_zero
    if zero == "auto" and settings(args)["sst2_max_steps"]:
        zero = str(default)
    if zero != "auto":
        return zero, {}
    probes: dict[int, float] = {}
    for stage in (0, 2):
        _, probe_config = configure(
            f"probe-z{stage}",
            f"train.zero_stage={stage}",
            f"train.max_steps={PROBE_STEPS}",
            f"train.log_every_steps={PROBE_WARM}",
        )
        probes[stage] = seconds_per_step(probe_config, prepared, PROBE_WARM)
    return str(min(probes, key=probes.__getitem__)), probes


def steps_that_fit(deadline: float, per_step: float, epochs: int, full_steps: int) -> int | None:
    """The optimizer steps that fit before `deadline` (Unix time); None when all of them do."""
    # load + DeepSpeed start, then an evaluation, checkpoint and export per epoch
    fixed = 15.0 + 5.0 * epochs
    fits = int((deadline - time.time() - fixed) / per_step)
    return max(fits, 1) if fits < full_steps else None


def case_sst2(args: argparse.Namespace) -> dict[str, Any]:
    """Full fine-tuning of MiniLM on all of SST-2 through ftpipe's prep and training core.

    Unless --sst2-zero names a stage, two short probes (ZeRO-0 and ZeRO-2, 120 steps each)
    pick the faster stage first. With --deadline, the run is capped at the optimizer steps
    that fit before it (train.max_steps: the schedule then spans the shorter run).
    """
    from ftpipe.data import run_prep
    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.loop import RankContext, train

    data, work = Path(args.data).resolve(), Path(args.work) / "sst2"

    def configure(name: str, *extra: str) -> tuple[list[str], Any]:
        """The run `name`: --sst2-override, then `extra`."""
        return sst2_config(data, work, name, *args.sst2_override, *extra)

    _, config = configure("train")
    started = time.perf_counter()
    prep = run_prep(config)
    prep_seconds = time.perf_counter() - started
    prepared = load_prepared(prep.output_dir)
    steps_per_epoch = len(prepared.splits["train"]) // config.train.batch_size
    full_steps = steps_per_epoch * config.train.epochs
    zero, probes = pick_zero_stage(args, config.train.zero_stage, configure, prepared)
    extra = [f"train.zero_stage={zero}", "train.log_every_steps=500"]
    max_steps = settings(args)["sst2_max_steps"]
    if not max_steps and args.deadline and probes:
        max_steps = steps_that_fit(
            args.deadline, probes[int(zero)], config.train.epochs, full_steps
        )
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

    from ftpipe.data import run_prep
    from ftpipe.data.prepared import load_prepared

    data, work = Path(args.data).resolve(), Path(args.work) / "sst2-profile"
    steps, warm = (6, 2) if args.smoke else (150, 50)

    def configure(name: str, zero: int) -> Any:
        """The run `name` at ZeRO stage `zero`, limited to the profiled steps."""
        limits = (
            f"train.zero_stage={zero}",
            f"train.max_steps={steps}",
            f"train.log_every_steps={warm}",
        )
        return sst2_config(data, work, name, *limits)[1]

    prepared = load_prepared(run_prep(configure("x", 2)).output_dir)
    out: dict[str, Any] = {"steps": steps}
    for zero in (2, 0):
        profiler = cProfile.Profile()
        per_step = seconds_per_step(configure(f"cprofile-z{zero}", zero), prepared, warm, profiler)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        out[f"z{zero}_cprofile_tottime"] = text.getvalue()[-6000:]
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        out[f"z{zero}_cprofile_cumulative"] = text.getvalue()[-9000:]
        out[f"z{zero}_seconds_per_step_under_cprofile"] = per_step
    if torch.cuda.is_available():
        prof = profile(activities=[ProfilerActivity.CUDA])
        per_step = seconds_per_step(configure("kernels-z2", 2), prepared, warm, prof)
        events = prof.key_averages()
        kernel_ms = sum((getattr(e, "device_time_total", 0) or 0) for e in events) / 1e3
        out["z2_seconds_per_step_under_torch_profiler"] = per_step
        out["z2_gpu_kernel_ms_whole_run"] = kernel_ms
        out["z2_gpu_kernel_ms_per_step_incl_eval"] = kernel_ms / steps
        out["z2_kernel_launches"] = sum(e.count for e in events)
    return out
