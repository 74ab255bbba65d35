"""`ftpipe evaluate`, `register`, `promote` and `predict`, in-process, on a tiny model."""

from __future__ import annotations

import pandas as pd
import yaml
from typer.testing import CliRunner

from ftpipe.cli import app
from tests.helpers import write_csv
from tests.unit.registry.helpers import with_registry


def test_evaluate_register_promote_predict(trained, tmp_path, tracking_uri, model_name):
    config, _ = trained("full")
    config = with_registry(
        config, tracking_uri, model_name, f"evaluate.output_dir={tmp_path / 'evaluate'}"
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    runner = CliRunner()

    def ftpipe(*args: str) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    shown = ftpipe("evaluate", "-c", str(path))
    assert "macro-F1" in shown and "good" in shown
    assert (tmp_path / "evaluate" / "confusion_matrix.png").exists()

    shown = ftpipe("register", "-c", str(path))
    assert f"Registered {model_name} version 1 (alias challenger)" in shown
    assert "No evaluation attached" not in shown

    shown = ftpipe("promote", "-c", str(path))
    assert "PROMOTED: version 1" in shown and "no champion" in shown
    assert "already is champion" in ftpipe("promote", "-c", str(path))

    uri = f"models:/{model_name}@champion"
    shown = ftpipe("predict", "-m", uri, "--tracking-uri", tracking_uri, "-t", "good hello help")
    assert "prob_good" in shown
    source = write_csv(tmp_path / "new.csv", [["bad late crash", 1], ["good help please", 2]])
    ftpipe("predict", "-m", uri, "--tracking-uri", tracking_uri, "--input", str(source))
    written = pd.read_csv(tmp_path / "new.predictions.csv")
    assert written.columns.tolist() == ["row", "text", "label", "prob_bad", "prob_good"]
    assert written["label"].tolist() == ["bad", "good"]
