"""Shared by the benchmarks: describe the machine and write a section of docs/benchmarks.md.

Each benchmark owns one section between markers, so benchmarks update the file independently.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from importlib.metadata import version
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Written by the scripts in bench/; each section says how to reproduce it. Numbers are medians
on the hardware named in the section. Do not edit a section by hand: rerun its script.
"""


def hardware_summary() -> str:
    """CPU model, cores, memory, Python and key package versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo.read_text()).group(1))
        memory = f", {kib / 2**20:.0f} GiB RAM"
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("torch", "transformers", "tokenizers", "datasets")
    )
    return f"{cpu}, {os.cpu_count()} cores{memory}; Python {platform.python_version()}; {packages}"


def write_section(key: str, title: str, command: str, hardware: str, body: str) -> None:
    """Replace (or append) the section `key` of docs/benchmarks.md."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = (
        f"{start}\n## {title}\n\n"
        f"- Command: `.venv/bin/python {command}`\n"
        f"- Hardware: {hardware}\n"
        f"- Date: {date.today().isoformat()}\n\n"
        f"{body}\n{end}"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    if start in text:
        text = re.sub(
            re.escape(start) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
