"""The first two steps: identify the inputs, then prepare them (`ftpipe prep`)."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Output


def identify(config: str) -> NamedTuple("Identity", [("data_fingerprint", str),
                                                     ("config_hash", str)]):  # fmt: skip
    """The data fingerprint and config hash: the keys that every later stage caches on.

    It always runs (uncached): reading the inputs' bytes is how a changed file is noticed.
    """
    from collections import namedtuple

    from ftpipe.config import config_hash
    from ftpipe.data.prep import input_fingerprint
    from ftpipe.stage import load_stage_config

    cfg = load_stage_config(config)
    identity = namedtuple("Identity", ["data_fingerprint", "config_hash"])
    return identity(input_fingerprint(cfg), config_hash(cfg))


def prep(
    config: str, data_fingerprint: str, prepared: Output[Dataset], report: Output[HTML]
) -> None:
    """Load, validate, split and tokenize the data (`ftpipe prep`)."""
    from pathlib import Path

    from ftpipe.data.prepared import PrepDir
    from ftpipe.report import stage_report
    from ftpipe.stage import Stage, run_stage

    outputs = {"data.output_dir": (prepared.path, prepared.uri)}
    run_stage(Stage("prep", outputs=outputs), config)
    written = PrepDir(Path(prepared.path))
    if written.fingerprint != data_fingerprint:
        raise RuntimeError(f"prep wrote {written.fingerprint}, identify saw {data_fingerprint}")
    prepared.metadata.update(
        {"fingerprint": data_fingerprint}
        | {f"{name}_rows": rows for name, rows in written.rows.items()}
    )
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(stage_report("data", Path(prepared.path)))
