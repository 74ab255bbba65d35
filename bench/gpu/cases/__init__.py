"""The benchmark cases, by name; each runs in its own process and returns a JSON-able dict."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

from .device import case_peak, case_profile
from .llm import case_llm_core, case_llm_hf, case_make_llama
from .sst2 import case_sst2, case_sst2_profile

Case = Callable[[argparse.Namespace], dict[str, Any]]

RUNNERS: dict[str, Case] = {  # in the default order of --cases
    "peak": case_peak,
    "make-llama": case_make_llama,
    "llm-z0": partial(case_llm_core, strategy="full", zero=0),
    "llm-z2": partial(case_llm_core, strategy="full", zero=2),
    "llm-lora": partial(case_llm_core, strategy="lora", zero=0),
    "llm-hf": case_llm_hf,
    "sst2": case_sst2,
    "profile": case_profile,
    "sst2-profile": case_sst2_profile,
}
CASES = tuple(RUNNERS)
CASE_SECONDS = {  # rough minimum each needs; a case is skipped when less time is left
    "peak": 20, "sst2": 120, "make-llama": 30, "llm-z0": 60, "llm-z2": 60,
    "llm-lora": 45, "llm-hf": 50, "profile": 30, "sst2-profile": 60,
}  # fmt: skip
