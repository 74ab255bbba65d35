"""Models-from-code entry point of the logged pyfunc model.

MLflow copies this file into the logged model and runs it when the model loads, so the logged
model holds no pickle. See `ftpipe.registry.pyfunc`.
"""

from mlflow.models import set_model

from ftpipe.registry.pyfunc import ExportModel

set_model(ExportModel())
