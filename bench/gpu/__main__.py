"""Entry point: `python bench/gpu ...` or, from the repository root, `python -m bench.gpu ...`."""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a directory: Python put bench/gpu itself first on sys.path; the repository root
    # takes its place, so `bench.gpu` imports as a package and its modules shadow nothing.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from bench.gpu.runner import main

if __name__ == "__main__":
    main()
