"""MLflow tracking, the model registry and the promotion gate: the only package importing mlflow.

* `tracking`: `TrainingRun` (one run per training run or Tune trial: flattened params, lineage
  tags, prep artifacts, metrics, system metrics) and `log_evaluation`.
* `live`: `LiveMetrics`, the picklable sink that logs the training loop's curves and
  evaluations into a run as they happen (from Ray Train workers and Tune trials too).
* `links`: the tags linking sweep, trials, the final training run and the model version, and
  the version's link to its logged model.
* `model_log`: log an export as a pyfunc model from its directory (and read its config).
* `versions`: register a `challenger` version with lineage and evaluation evidence, resolve a
  `models:/` reference to its version, attach an evaluation to a version.
* `evidence`: the evaluation tags on a version that the promotion gate reads, and the gate's
  decision as a one-sentence description and a Markdown page.
* `download`: fetch a registered model's export directory back (cached).
* `promote`: the serialized promotion of `challenger` to `champion`, under `lock`'s promotion
  lock.
* `client`: connecting (explicit URIs, no process-global MLflow state), retries, and
  `scoped_mlflow` for the calls MLflow has only at module level.
* `gate` (pure numpy), `lineage` and `params` (pure Python): the statistics and the tags, testable
  without MLflow.

Import the submodules directly; this package imports nothing, so `import ftpipe.registry.gate`
stays light.
"""
