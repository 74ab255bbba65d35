"""MLflow tracking, the model registry and the promotion gate: the only package importing mlflow.

* `tracking`: `TrainingRun` (one run per training run or Tune trial: flattened params, lineage
  tags, prep artifacts, metrics, system metrics) and `log_evaluation`.
* `models`: log an export as a pyfunc model from its directory, register a `challenger`
  version with lineage and evaluation evidence, download a registered model.
* `promote`: the serialized promotion of `challenger` to `champion`.
* `gate` (pure numpy), `lineage` and `params` (pure Python): the statistics and the tags, testable
  without MLflow.

Import the submodules directly; this package imports nothing, so `import ftpipe.registry.gate`
stays light.
"""
