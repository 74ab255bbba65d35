"""The GPU section of docs/benchmarks.md: device line, results table, notes and targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..report import write_section
from .common import LAUNCH

TARGETS = {"mfu": 0.45, "vs_hf": 1.0, "sst2_accuracy": 0.910, "sst2_seconds": 180.0}
LLM_TITLES = {
    "llm-z0": "1B decoder, full FT, ftpipe core, ZeRO-0",
    "llm-z2": "1B decoder, full FT, ftpipe core, ZeRO-2",
    "llm-lora": "1B decoder, LoRA r=16 (all linear), ftpipe core, ZeRO-0",
    "llm-hf": "1B decoder, full FT, HF Trainer (fp32 weights + bf16 autocast)",
}


def num(value: Any, fmt: str, missing: str = "n/a") -> str:
    """`value` formatted with `fmt`, or `missing` when it is None."""
    return missing if value is None else format(value, fmt)


def status(case: dict[str, Any]) -> str | None:
    """Why a case has no numbers (skipped or failed), or None when it ran."""
    if "skipped" in case:
        return f"skipped ({case['skipped']})"
    if "failed" in case:
        return f"failed ({case['failed']})"
    return None


def sst2_row(sst2: dict[str, Any]) -> str:
    """The table row of the SST-2 case."""
    note = status(sst2)
    if note:
        return f"| SST-2, MiniLM-L6 full FT | | | | | | | {note} |"
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
    return (
        f"| SST-2, MiniLM-L6 full FT | {sst2['train_rows']:,} rows, {steps} steps "
        f"({sst2['epochs']}-epoch schedule), batch {sst2['batch_size']}, lr "
        f"{sst2['lr']:g}, seq <= 128, bf16, ZeRO-{sst2.get('zero_stage', 0)} | "
        f"{sst2['tokens_per_second']:,.0f} (non-pad) | "
        f"{sst2['samples_per_second']:,.0f} | | "
        f"{sst2['peak_allocated_gib']:.1f} GiB | | {accuracy} |"
    )


def llm_row(name: str, title: str, case: dict[str, Any]) -> str:
    """The table row of a decoder case (core or HF Trainer)."""
    note = status(case)
    if note:
        return f"| {title} | | | | | | | {note} |"
    setting = (
        f"micro {case['micro']} x accum {case['accum']} x seq {case['seq']}, "
        f"{case['measured_steps']} steady steps"
    )
    mfu = f"{case['mfu']:.1%} ({case['mfu_causal']:.1%} causal)" if "mfu" in case else ""
    vs_hf = f"{case['vs_hf']:.2f}x" if "vs_hf" in case else ("1.00x" if name == "llm-hf" else "")
    result = ""
    if "losses" in case:
        result = f"loss {case['losses'][0]:.2f} -> {case['losses'][-1]:.2f}"
    if case.get("trainable"):
        result += f"; {case['trainable']:,} trainable"
    if case.get("error_after_training"):
        result += "; the final evaluation then failed (see below)"
    rows_per_s = case["tokens_per_second"] / case["seq"]
    return (
        f"| {title} | {setting} | {case['tokens_per_second']:,.0f} | {rows_per_s:.1f} | "
        f"{mfu} | {case['training_peak']['peak_allocated_gib']:.1f} GiB | {vs_hf} | {result} |"
    )


def decoder_note(results: dict[str, Any]) -> str:
    """The paragraph on the decoder, the MFU formula and how tokens/s is measured."""
    llama, flops = results["settings"]["llama"], results["flops_per_token"]
    return (
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
        f"{results['settings']['warmup']} warm-up optimizer steps) on the core's own clock; "
        "memory is the training peak of torch.cuda.max_memory_allocated."
    )


def profile_note(profile: dict[str, Any]) -> list[str]:
    """The paragraph on the decoder step's kernel profile (none when it did not run)."""
    if "by_kind_ms" not in profile:
        return []
    total = profile["gpu_ms"]
    kinds = ", ".join(f"{k} {v / total:.0%}" for k, v in profile["by_kind_ms"].items())
    source = f" ({profile['source']})" if profile.get("source") else ""
    return [
        "",
        f"Profile{source} (torch.profiler, one plain bf16 fwd+bwd+fused-AdamW step of the "
        f"decoder, micro {profile['micro']} x seq {profile['seq']}, {total:.0f} ms of GPU "
        "time): "
        f"{kinds}. The matmuls alone run at "
        f"{profile['matmul_tflops_in_gemm_time']:.0f} TFLOP/s.",
    ]


def section_body(results: dict[str, Any]) -> str:
    """The markdown body of the GPU section (table, settings, targets)."""
    cases = results["cases"]
    peak = cases.get("peak", {})
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
    if cases.get("sst2"):
        lines.append(sst2_row(cases["sst2"]))
    lines += [
        llm_row(name, title, cases[name]) for name, title in LLM_TITLES.items() if name in cases
    ]
    lines += ["", decoder_note(results), *profile_note(cases.get("profile", {}))]
    lines += ["", *target_lines(results)]
    return "\n".join(lines) + "\n"


def target_lines(results: dict[str, Any]) -> list[str]:
    """The targets (MFU, vs HF Trainer, SST-2 accuracy and time), each met or missed."""
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
    """Print the section body (the end of a run on the GPU machine)."""
    print("\n" + section_body(results), flush=True)


def render(path: Path, command: str, notes: str | None) -> None:
    """Write the GPU section of docs/benchmarks.md from a results.json.

    Args:
        path: results.json of a run.
        command: The command that ran on the GPU machine (quoted in the section).
        notes: A markdown file appended to the section, if any.
    """
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
    write_section("gpu", "GPU validation (1 GPU)", f"{LAUNCH} --render {path.name}", hardware, body)
