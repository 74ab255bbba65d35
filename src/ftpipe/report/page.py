"""The run report (`report.html`) and each stage's page, built from the same sections.

A stage's KFP artifact is its section alone, in the page's style; the run report puts every
section that a stage has written so far on one page, in the order the stages run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ftpipe.report.data import data_section
from ftpipe.report.evaluation import evaluation_section
from ftpipe.report.files import RunFiles
from ftpipe.report.gate import gate_section, register_section
from ftpipe.report.html import page
from ftpipe.report.lineage import lineage_section
from ftpipe.report.recommend import recommendation_section
from ftpipe.report.sweep import sweep_section
from ftpipe.report.training import training_section

REPORT = "report.html"
"""The run report's file name, in the run's directory."""

SECTIONS: dict[str, tuple[str, Callable[[Path], str]]] = {
    "data": ("Data", data_section),
    "recommendation": ("Recommendation", recommendation_section),
    "sweep": ("Sweep", sweep_section),
    "training": ("Training", training_section),
    "evaluation": ("Evaluation", evaluation_section),
    "gate": ("Gate", gate_section),
}
"""Each stage's section: its title and how it is drawn from the stage's output."""


def stage_report(kind: str, path: Path) -> str:
    """One stage's section as a page of its own (a KFP HTML artifact).

    Args:
        kind: A key of `SECTIONS` ("data", "recommendation", "sweep", ...).
        path: The stage's output folder (for "gate": its decision.json).
    """
    title, draw = SECTIONS[kind]
    return page(title, [(kind, title, draw(Path(path)))])


def register_report(registered: Path, decision: Path | None = None) -> str:
    """The register step's page: the version registered, and the gate's answer on it."""
    return page("Register", [("register", "Register", register_section(registered, decision))])


def run_report(run_dir: Path, replayed: Sequence[Path] = ()) -> str:
    """Every section the run's stages have written so far, and the lineage, as one page.

    Args:
        run_dir: The run's directory.
        replayed: Stage directories of earlier runs whose outputs this run's cache hits
            replayed (the KFP local runner leaves them there, not in `run_dir`).

    Raises:
        DataError: If `run_dir` holds no stage's output.
    """
    files = RunFiles.find(Path(run_dir), replayed)
    found = {"data": files.prep, "recommendation": files.recommend, "sweep": files.sweep,
             "training": files.train, "evaluation": files.evaluate}  # fmt: skip
    sections = [(kind, SECTIONS[kind][0], SECTIONS[kind][1](path))
                for kind, path in found.items() if path is not None]  # fmt: skip
    if files.registered is not None:
        sections.append(("register", "Register and gate",
                         register_section(files.registered, files.decision)))  # fmt: skip
    elif files.decision is not None:
        sections.append(("gate", "Gate", gate_section(files.decision)))
    sections.append(("lineage", "Lineage", lineage_section(files)))
    return page(f"Run {files.root.name}", sections)


def write_run_report(run_dir: Path, replayed: Sequence[Path] = ()) -> Path:
    """Write `run_dir/report.html`, self-contained (inline CSS and images); return its path.

    Args:
        run_dir: The run's directory.
        replayed: Stage directories of earlier runs that this run's cache hits replayed.

    Raises:
        DataError: If `run_dir` holds no stage's output.
    """
    path = Path(run_dir) / REPORT
    path.write_text(run_report(run_dir, replayed), encoding="utf-8")
    return path
