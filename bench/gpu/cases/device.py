"""Plain-torch measurements of the device: matmul peak, what the machine is, a kernel profile."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from ..common import llama_flops_per_token, random_rows, settings


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
    rates = timed_rates(a, b, c, iters)
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


def matmul_rate(a: Any, b: Any, iters: int = 20) -> float:
    """Median TFLOP/s of a bf16 a @ b on the GPU (after a second of warm-up).

    Args:
        a: Left operand (any device and dtype; moved to the GPU as bf16).
        b: Right operand, likewise.
        iters: Products per timed repeat.

    Returns:
        The median rate of 7 timed repeats.
    """
    import torch

    a, b = a.cuda().bfloat16(), b.cuda().bfloat16()
    c = a @ b
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
    return statistics.median(timed_rates(a, b, c, iters))


def timed_rates(a: Any, b: Any, c: Any, iters: int) -> list[float]:
    """TFLOP/s of `iters` products a @ b into c, for each of 7 repeats timed by CUDA events."""
    import torch

    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1] * iters
    rates = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        rates.append(flops / (start.elapsed_time(end) / 1e3) / 1e12)
    return rates


def device_info() -> dict[str, Any]:
    """Python, CPUs, RAM, package versions and, with CUDA, the GPU and its nvidia-smi limits."""
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
        """One training step of the decoder on `ids`."""
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
    """The kind of a CUDA kernel, from its name: attention, matmul, optimizer, loss, ..."""
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
