"""A stage command alone (`ftpipe train`) logs ftpipe's progress and the libraries' warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO

# Each case runs in a process of its own: logging's set-up and the libraries' loggers are
# process-wide, and a library sets its own level when it is first imported.
SCRIPT = """
import logging, os
from ftpipe.cli import _configure_logging

_configure_logging()
import mlflow, ray, transformers
from transformers import AutoModel

logging.getLogger("ftpipe.train.loop").info("step 5/42 loss 0.68")
logging.getLogger("mlflow.tracking").info("mlflow notice")
logging.getLogger("ray.train").info("ray notice")
logging.getLogger("ray.train").warning("ray warning")
logging.getLogger("DeepSpeed").warning("Setting accelerator to CPU. If you have GPU ...")
AutoModel.from_pretrained({model!r})  # a classifier's checkpoint: its head is UNEXPECTED
print("children:", os.environ["MLFLOW_LOGGING_LEVEL"], os.environ["TRANSFORMERS_VERBOSITY"])
"""

LOGGING_VARIABLES = ("FTPIPE_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY")


def run_script(model: Path, **environ: str) -> subprocess.CompletedProcess:
    """Run SCRIPT, loading `model`, with `environ` and none of the logging variables else."""
    env = {key: value for key, value in os.environ.items() if key not in LOGGING_VARIABLES}
    env |= {"COLUMNS": "200", **environ}
    script = textwrap.dedent(SCRIPT.format(model=str(model)))
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip


def test_libraries_log_from_warning_on_and_ftpipe_keeps_its_progress(tiny_model_dir):
    done = run_script(tiny_model_dir)
    assert done.returncode == 0, done.stderr
    assert "step 5/42 loss 0.68" in done.stderr
    assert "ray warning" in done.stderr
    for noise in ("mlflow notice", "ray notice", "LOAD REPORT", "Setting accelerator to CPU"):
        assert noise not in done.stdout + done.stderr, noise
    # Stages and Ray workers started from here set their libraries up quietly too.
    assert "children: WARNING warning" in done.stdout


def test_debug_leaves_the_libraries_as_they_are(tiny_model_dir):
    done = run_script(tiny_model_dir, FTPIPE_LOG_LEVEL="DEBUG", MLFLOW_LOGGING_LEVEL="INFO",
                      TRANSFORMERS_VERBOSITY="warning")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mlflow notice" in done.stderr
    assert "LOAD REPORT" in done.stderr
