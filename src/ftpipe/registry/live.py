"""Live metrics: what training reports, written to its MLflow run as it happens.

The training loop knows no tracker: it calls a `MetricsSink` (`ftpipe.train.loop`) on rank 0
with the training curves every `train.log_every_steps` and the evaluation metrics at every
evaluation. `LiveMetrics` is that sink for an MLflow run. Ray Train workers and Tune trials
are fresh Python processes, so it is pickled with only the store's URI and the run's id and
opens its own client where it runs.

A store that stops answering mid-run does not stop the training: the metrics that cannot be
written are dropped with one warning, and the run's summary is logged when training ends.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ftpipe.registry.client import retry

log = logging.getLogger(__name__)

_BAD_KEY_CHARS = re.compile(r"[^\w./\- :]")

_METRICS_PER_CALL = 1000
"""MLflow's cap on metrics per `log_batch` call."""

NOT_SCORES = frozenset({
    "score", "best", "best_step", "bad_evals", "exported", "start_step", "workers",
    "accumulation", "train_samples_per_second", "padding_share", "padding_share_unpacked",
})  # fmt: skip
"""Keys of a training evaluation's record that are the loop's bookkeeping, not the model's
scores: `score` only ranks checkpoints (it equals the metric, or sits just below a tie)."""


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: characters it rejects (from label names) become `_`."""
    return _BAD_KEY_CHARS.sub("_", name)


def metric_entries(metrics: Mapping[str, Any], step: int) -> list[Metric]:
    """The numeric entries of `metrics` as MLflow metrics at `step`, stamped now."""
    now = int(time.time() * 1000)
    return [
        Metric(metric_key(k), float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def log_metric_batch(client: MlflowClient, run_id: str, metrics: Mapping[str, Any], step: int):
    """Log the numeric entries of `metrics` at `step`, in as few calls as MLflow allows."""
    entries = metric_entries(metrics, step)
    for start in range(0, len(entries), _METRICS_PER_CALL):
        chunk = entries[start : start + _METRICS_PER_CALL]
        retry(lambda c=chunk: client.log_batch(run_id, metrics=c), "log metrics")


class LiveMetrics:
    """A picklable `MetricsSink` that logs into one MLflow run.

    Attributes:
        tracking_uri: The store (absolute: the caller's working directory is not the worker's).
        run_id: The run the metrics belong to.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        """Name the store and the run; nothing connects until the first call."""
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client: MlflowClient | None = None
        self._failed = False

    def __call__(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log `metrics` at `step` (one `log_batch`); a store error is warned about once."""
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri, self.tracking_uri)
        try:
            log_metric_batch(self._client, self.run_id, metrics, step)
        except MlflowException as exc:
            if not self._failed:
                log.warning(
                    "Cannot log live metrics to MLflow run %s at %s (%s); training goes on, and "
                    "the run's summary is logged when it ends.", self.run_id,
                    self.tracking_uri, exc,
                )  # fmt: skip
            self._failed = True

    def __getstate__(self) -> dict[str, Any]:
        # A client holds connections and locks: the copy in a worker opens its own.
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tracking_uri"], state["run_id"])
