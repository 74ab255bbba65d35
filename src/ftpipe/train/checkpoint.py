"""Checkpoints: save and load the full training state, and keep a bounded number on disk.

A checkpoint directory holds:
* `state/`: DeepSpeed's model, optimizer and scheduler state. Every rank writes its own
  shard (the save contains collectives, so all ranks must call it);
* `rng-rank{r}.safetensors`: each rank's torch (and CUDA) RNG state, so dropout after a
  resume draws what an uninterrupted run would have drawn;
* `trainer_state.json`: the data position (global step), the early-stopping state and the
  evaluation history, readable without unpickling anything;
* `model/`, only in checkpoints that improved the metric: the export of that model.

Under Ray Train each rank writes to its own staging directory and Ray merges them in storage;
without Ray, `LocalCheckpoints` does the same merge and the retention.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

STATE_TAG = "state"
TRAINER_STATE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where training is and how evaluation has gone; saved in every checkpoint.

    Attributes:
        step: Optimizer steps taken. Epoch and position within it follow from it, because
            each epoch's row order is a pure function of (seed, epoch).
        best: Best value of the early-stopping metric so far.
        best_step: Step at which `best` was reached.
        bad_evals: Evaluations since the last improvement.
        history: Metrics of every evaluation so far.
    """

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(engine: Any, directory: Path, state: TrainerState, rank: int) -> None:
    """Write this rank's part of a checkpoint. Every rank must call it."""
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=STATE_TAG, save_latest=False)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(directory / f"rng-rank{rank}.safetensors"))
    if rank == 0:
        (directory / TRAINER_STATE).write_text(json.dumps(asdict(state), indent=1) + "\n")


def load_checkpoint(engine: Any, directory: Path, rank: int) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG state; return where training was.

    Raises:
        FileNotFoundError: If the directory is not a complete checkpoint.
    """
    if not (directory / STATE_TAG).is_dir():
        raise FileNotFoundError(f"{directory} is not an ftpipe checkpoint (no {STATE_TAG}/)")
    state = read_trainer_state(directory)
    loaded, _ = engine.load_checkpoint(str(directory), tag=STATE_TAG)
    if loaded is None:
        raise FileNotFoundError(f"DeepSpeed found no state in {directory / STATE_TAG}")
    rng_file = directory / f"rng-rank{rank}.safetensors"
    if not rng_file.exists():  # resuming with more ranks than saved: dropout will differ
        log.warning("%s holds no RNG state for rank %d; its dropout will differ", directory, rank)
    else:
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state


def read_trainer_state(directory: Path) -> TrainerState:
    """The step, early-stopping state and evaluation history saved in a checkpoint.

    Raises:
        FileNotFoundError: If the directory holds no trainer state.
    """
    state_file = directory / TRAINER_STATE
    if not state_file.exists():
        raise FileNotFoundError(f"{directory} is not an ftpipe checkpoint (no {TRAINER_STATE})")
    return TrainerState(**json.loads(state_file.read_text()))


class LocalCheckpoints:
    """Checkpoints in a local directory, for runs without Ray (Ray Train does this itself).

    Each report's staging directory is merged into `root/step-NNNNNNNN`. The `keep` best by
    the reported `score` are kept, and the latest always, so a resume never loses its starting
    point.
    """

    def __init__(self, root: Path, keep: int, higher_is_better: bool) -> None:
        self.root, self.keep, self.higher = root, keep, higher_is_better
        self.scores: dict[Path, float] = {}
        self.exported: set[Path] = set()
        self.latest: Path | None = None

    def add(self, staging: Path, metrics: dict[str, Any]) -> Path:
        """Move a staging directory in as the checkpoint of `metrics["step"]`."""
        target = self.root / f"step-{metrics['step']:08d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, target, dirs_exist_ok=True)
        self.scores[target] = metrics["score"]
        if metrics.get("exported"):
            self.exported.add(target)
        self.latest = target
        return target

    def best(self) -> Path | None:
        """The kept checkpoint with the best metric among those that hold an export."""
        candidates = [path for path in self.scores if path in self.exported]
        if not candidates:
            return None
        pick = max if self.higher else min
        return pick(candidates, key=self.scores.__getitem__)

    def prune(self) -> None:
        """Delete all but the `keep` best, the best export and the latest (on one rank)."""
        ranked = sorted(self.scores, key=self.scores.__getitem__, reverse=self.higher)
        keep = {self.latest, self.best()}
        for path in ranked[self.keep :]:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
                del self.scores[path]
                self.exported.discard(path)
