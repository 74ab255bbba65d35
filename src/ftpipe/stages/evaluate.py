"""The evaluate stage: score a model on the held-out split, as its task scores it.

The held-out split is prep's test split when it held one out (`data.test`,
`data.test_fraction`), else eval (`load_heldout`); `evaluation.json` records which. The task
scores the model's outputs (`ServingTask.score_heldout`).

It writes, under `evaluate.output_dir`:

* `metrics.json`: the task's metrics, p95 single-row latency and the model's size on disk.
  Classifiers: accuracy, macro-F1, per-class precision/recall/F1, the expected calibration
  error (ECE, `evaluate.calibration_bins` equal-width bins) and log loss of the probabilities
  served (the export's temperature applied), the export's `temperature` with the ECE and log
  loss before (`*_raw`) and after (`*_calibrated`) it. Tagged words: strict IOB2 entity
  precision, recall and F1, micro and per type, and token accuracy;
* `predictions.parquet`: one row per held-out example (row, text, label, predicted, ...; for
  tagged words, a sentence with its tags joined by spaces), which the promotion gate's paired
  bootstrap reads;
* `confusion_matrix.png` (of classes, or of entity types); for classifiers, `reliability.json`
  (the reliability diagram's bins) and `errors.jsonl` (the 20 most confident errors); for
  tagged words, `error_patterns.json` (the 20 most frequent errors); for causal LMs,
  `generations.md`, the prompt / reference / generation table (the run report shows them all);
* `evaluation.json`: the summary the registry attaches to a model version.

The held-out set is identified by a fingerprint of its rows (texts and label names, in order),
not of how they were tokenized, so models with different tokenizers or label orders are still
compared on the same set, and sets that differ are never compared. `run` logs the results
through `ftpipe.registry`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftpipe.config.schema import Config, canonical_json
from ftpipe.data.prepared import PrepDir
from ftpipe.errors import DataError, FtpipeError
from ftpipe.tasks.base import CONFUSION
from ftpipe.tasks.classification_report import ERRORS, RELIABILITY
from ftpipe.tasks.lm_serving import GENERATIONS
from ftpipe.train.outcome import read_record

if TYPE_CHECKING:
    from ftpipe.train.predictor import Predictor

PREDICTIONS = "predictions.parquet"
METRICS = "metrics.json"
SUMMARY = "evaluation.json"


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows: texts, optional second texts, label names, and their fingerprint.

    `split` names the prep split they are: "test", or "eval" when prep held out no test split.
    """

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    fingerprint: str
    split: str = "eval"


@dataclass
class Evaluation:
    """What `evaluate` measured and where it wrote it.

    Attributes:
        model: The model reference evaluated (directory or registry URI).
        fingerprint: The held-out set's fingerprint.
        rows: Held-out rows.
        metrics: Every scalar metric, by name.
        output_dir: Where the files are.
        run_id: The MLflow run the results were logged to, once logged.
        files: The files written, by kind.
        split: The prep split scored: "test", or "eval" when prep held out no test split
            (then the split that selected the model also scores it, optimistically).
    """

    model: str
    fingerprint: str
    rows: int
    metrics: dict[str, float]
    output_dir: str
    run_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    split: str = "eval"

    def save(self) -> Path:
        """Write evaluation.json and return its path."""
        path = Path(self.output_dir) / SUMMARY
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Evaluation:
        """Read an evaluation.json.

        Raises:
            DataError: If the file is missing.
        """
        path = Path(path)
        if path.is_dir():
            path = path / SUMMARY
        if not path.is_file():
            raise DataError(
                f"No evaluation at {path}. Run `ftpipe evaluate` first (it writes "
                f"evaluate.output_dir/{SUMMARY})."
            )
        return cls(**json.loads(path.read_text()))


def load_heldout(prep_dir: str | Path) -> HeldOut:
    """The split the model is scored on, as raw texts and label names.

    The test split when prep held one out: the sweep and training selected the model on eval,
    so a score on eval is optimistic. Without a test split, eval.

    Raises:
        DataError: If prep has not run.
    """
    import pyarrow.parquet as pq

    prep = PrepDir.open(prep_dir)
    prep.task.serving("evaluate")
    split = "test" if prep.has_test else "eval"
    table = pq.read_table(prep.split_path(split), columns=None)
    columns = table.column_names
    if "sentence" in columns:  # tagged words: a long sentence spans several rows (windows)
        _, first = np.unique(table.column("sentence").to_numpy(), return_index=True)
        table = table.take(np.sort(first))
    texts = table.column("text").to_pylist()
    pairs = table.column("text_pair").to_pylist() if "text_pair" in columns else None
    if "tags" in columns:
        labels = table.column("tags").to_pylist()
    elif prep.labels is None:  # language modelling: the references are texts, not labels
        labels = [""] * len(texts)
    else:
        labels = [prep.labels.names[i] for i in table.column("label").to_pylist()]
    return HeldOut(texts, pairs, labels, heldout_fingerprint(texts, pairs, labels), split)


def heldout_fingerprint(texts: list[str], pairs: list[str] | None, labels: list[str]) -> str:
    """sha256 over the ordered rows (text, second text, label name)."""
    rows = [texts, pairs if pairs is not None else [], labels]
    return hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()


def evaluate_model(
    predictor: Predictor,
    heldout: HeldOut,
    output_dir: str | Path,
    model_ref: str,
    calibration_bins: int = 15,
    latency_rows: int = 32,
) -> Evaluation:
    """Score `predictor` on `heldout` and write every output file; see module docstring.

    Raises:
        DataError: If the held-out set has labels the model does not know.
    """
    names = predictor.names
    unknown = sorted(set(predictor.task.classes(sorted(set(heldout.labels)))) - set(names))
    if unknown and predictor.task.labelled:
        raise DataError(
            f"The held-out set has labels the model {model_ref} was not trained on: "
            f"{', '.join(unknown[:5])}. Evaluate on data with the model's label set "
            f"({', '.join(names[:10])})."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = predictor.outputs(heldout.texts, heldout.pairs)
    metrics, predictions = predictor.task.score_heldout(
        outputs, heldout, names, predictor.temperature, output_dir, calibration_bins
    )
    latency = single_row_latency(predictor, heldout, latency_rows)
    if latency is not None:
        metrics["latency_p95_ms"] = latency
    metrics["size_mb"] = model_size_mb(predictor.directory, predictor.manifest)
    metrics["rows"] = float(len(heldout.labels))
    predictions.to_parquet(output_dir / PREDICTIONS, index=False)
    (output_dir / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    evaluation = Evaluation(
        model=model_ref,
        fingerprint=heldout.fingerprint,
        rows=len(heldout.labels),
        metrics=metrics,
        output_dir=str(output_dir),
        files={k: str(output_dir / v) for k, v in
               (("predictions", PREDICTIONS), ("confusion", CONFUSION), ("metrics", METRICS),
                ("generations", GENERATIONS), ("reliability", RELIABILITY), ("errors", ERRORS))
               if (output_dir / v).is_file()},
        split=heldout.split,
    )  # fmt: skip
    evaluation.save()
    return evaluation


def single_row_latency(predictor: Predictor, heldout: HeldOut, rows: int) -> float | None:
    """p95 milliseconds of one-row requests on this machine (after one warm-up); None for 0."""
    if rows == 0 or not heldout.texts:
        return None

    def one(i: int) -> None:
        i %= len(heldout.texts)
        predictor.predict([heldout.texts[i]], heldout.pairs and [heldout.pairs[i]])

    one(0)
    timings = []
    for i in range(rows):
        started = time.perf_counter()
        one(i)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 95))


def model_size_mb(directory: Path, manifest: dict[str, Any]) -> float:
    """Megabytes on disk a server loads: the export, plus a local base model under an adapter."""
    from ftpipe.hub import resolve_model

    paths = [Path(directory)]
    if manifest.get("kind") == "peft":
        base = Path(resolve_model(manifest["base_model"]))
        if base.is_dir():
            paths.append(base)
    total = sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())
    return total / 1e6


@dataclass(frozen=True)
class EvaluateResult:
    """An evaluation, logged and attached.

    Attributes:
        ref: The model reference evaluated.
        evaluation: What was measured and where it was written.
        report_rows: The task's section of the report (for classification: a row per class).
        report_unit: What a report row is about ("class", "entity type", "metric").
        report_columns: The report's value columns, after the unit.
        summary: The task's headline metrics in one line.
        version: The registered version the evaluation was attached to, if the model is one.
    """

    ref: str
    evaluation: Evaluation
    report_rows: list[list[str]]
    version: Any
    report_unit: str = "class"
    summary: str = ""
    report_columns: tuple[str, ...] = ("precision", "recall", "F1")


def run(config: Config, model: str | None = None, run_id: str | None = None) -> EvaluateResult:
    """Score a model on the held-out split; log to its training run; tag its version.

    Args:
        config: The run's config.
        model: An export directory or registry URI (default: train.output_dir/model).
        run_id: The MLflow run that trained the model (default: the one recorded beside the
            default export).

    Raises:
        FtpipeError: If `run_id` is not a finished run.
        ConfigError: If `data.output_dir` holds data prepared with other data keys (those
            that only change token ids aside: the model re-tokenizes the held-out texts).
    """
    PrepDir.check_config(config, "evaluate", tokenization=False)
    from ftpipe.registry.tracking import log_evaluation, run_status
    from ftpipe.registry.versions import tag_evaluation
    from ftpipe.stages.predict import resolve_model
    from ftpipe.train.predictor import Predictor

    ref = model or str(Path(config.train.output_dir) / "model")
    directory = resolve_model(ref, config.registry.tracking_uri)
    heldout = load_heldout(config.data.output_dir)
    predictor = Predictor.load(
        directory, config.evaluate.batch_size, "evaluate", config.generate,
        config.evaluate.generate_rows,
    )  # fmt: skip
    evaluation = evaluate_model(
        predictor, heldout, config.evaluate.output_dir, ref,
        config.evaluate.calibration_bins, config.evaluate.latency_rows,
    )  # fmt: skip
    run = training_run(config, model, run_id)
    if run is not None and run_status(config.registry, run) != "FINISHED":
        if run_id is not None:
            raise FtpipeError(
                f"--run-id {run_id} is not a finished MLflow run in registry.tracking_uri="
                f"{config.registry.tracking_uri}. Pass the run that trained the model, or omit it."
            )
        run = None  # the recorded training run failed: log to a run of our own instead
    evaluation.run_id = log_evaluation(evaluation, config, run, predictor.export.config)
    evaluation.save()
    version = tag_evaluation(config.registry, ref, evaluation)
    task = predictor.task
    rows = task.report_rows(evaluation.metrics, predictor.names)
    return EvaluateResult(
        ref, evaluation, rows, version, task.report_unit, task.summary(evaluation.metrics),
        task.report_columns,
    )  # fmt: skip


def training_run(config: Config, model: str | None, run_id: str | None) -> str | None:
    """The training run of the model: explicit, or recorded beside the default export."""
    if run_id is not None or model is not None:
        return run_id
    record = read_record(config.train.output_dir)
    return record["run_id"] if record else None
