"""The command line: run each case in its own process within a time budget, collect results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import __doc__ as overview
from .cases import CASE_SECONDS, CASES, RUNNERS
from .common import LAUNCH, PACKAGE, llama_flops_per_token, settings
from .render import print_table, render, section_body

SHM = Path("/dev/shm")


def run_case(args: argparse.Namespace) -> None:
    """Run the case --case in this process and write its result to --result (JSON)."""
    import torch

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = RUNNERS[args.case](args)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))


def case_environment() -> dict[str, str]:
    """The cases' environment: ours, with TMPDIR in /dev/shm when it has room."""
    env = dict(os.environ)
    if SHM.is_dir() and shutil.disk_usage(SHM).free > 48 * 2**30:
        # The core checkpoints (15 GB for the 1B model: weights, fp32 master copy, Adam) into a
        # temporary directory at its last evaluation; in memory that costs seconds, not minutes.
        env["TMPDIR"] = tempfile.mkdtemp(dir=SHM, prefix="bench-gpu-")
    return env


def run_in_process(
    args: argparse.Namespace, case: str, left: float, env: dict[str, str], log_path: Path
) -> dict[str, Any]:
    """Run one case in a child process (output appended to the log) within `left` seconds.

    Args:
        args: The parsed command line (forwarded to the child).
        case: The case's name.
        left: Seconds left of --budget.
        env: The child's environment.
        log_path: bench.log.

    Returns:
        The case's result, or its failure (exit code or "timeout") and the log's last lines;
        either way with the child's wall time.
    """
    result_path = Path(args.work) / f"{case}.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(PACKAGE), "--case", case, "--result", str(result_path),
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
    verdict = "ok" if code == 0 else f"FAILED ({code})"
    print(f"[{case}] {verdict} in {seconds:.0f} s", flush=True)
    if code == 0 and result_path.exists():
        return json.loads(result_path.read_text()) | {"process_seconds": seconds}
    tail = log_path.read_text().splitlines()[-25:]
    return {"failed": code, "log_tail": tail, "process_seconds": seconds}


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the --cases one by one within --budget; write results.json and section.md to --out.

    Args:
        args: The parsed command line.

    Returns:
        The results: the run's command, date, mode, settings, FLOPs per token and every case's
        result (or why it was skipped or failed), with MFU and ratios derived.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    log_path = out / "bench.log"
    deadline = time.monotonic() + args.budget
    s = settings(args)
    results: dict[str, Any] = {
        "command": " ".join(["python3", LAUNCH, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
        "settings": s,
        "flops_per_token": llama_flops_per_token(s["llama"], s["seq"]),
        "cases": {},
    }
    env = case_environment()
    results["tmpdir"] = env.get("TMPDIR", tempfile.gettempdir())
    for case in args.cases:
        left = deadline - time.monotonic()
        if left < CASE_SECONDS[case] * (0.3 if args.smoke else 1):
            results["cases"][case] = {"skipped": f"{left:.0f} s left of --budget"}
            print(f"[{case}] skipped: {left:.0f} s left", flush=True)
            continue
        results["cases"][case] = run_in_process(args, case, left, env, log_path)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    derive(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "section.md").write_text(section_body(results))
    if env.get("TMPDIR", "").startswith(str(SHM)):
        shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    return results


def forwarded(args: argparse.Namespace) -> list[str]:
    """The flags a case's child process gets from this command line."""
    flags = ["--data", args.data, "--work", args.work, "--micro", str(args.micro),
             "--accum", str(args.accum), "--steps", str(args.steps), "--warmup",
             str(args.warmup), "--seq", str(args.seq)]  # fmt: skip
    flags += ["--quick"] * args.quick + ["--smoke"] * args.smoke
    flags += ["--sst2-zero", args.sst2_zero]
    for item in args.sst2_override:
        flags += ["--sst2-override", item]
    return flags


def derive(results: dict[str, Any]) -> None:
    """MFU and ratios from the raw case results (added to the cases in place)."""
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


def parse_args() -> argparse.Namespace:
    """The command line: the run's sizes and cases, a case's child flags, or --render."""
    parser = argparse.ArgumentParser(description=overview.splitlines()[0])
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
    return parser.parse_args()


def main() -> None:
    """Render docs from a results.json, run one case (a child), or run them all."""
    args = parse_args()
    if args.render:
        render(args.render, args.device_command, args.notes)
        return
    if args.case:
        run_case(args)
        return
    print_table(orchestrate(args))
