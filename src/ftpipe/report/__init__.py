"""One HTML report per pipeline run, and the same sections as each stage's KFP artifact.

`write_run_report(run_dir)` writes `run_dir/report.html`: the data, the recommendation and
why, the sweep, the training curves, the held-out evaluation, the gate's decision and the
lineage, each read from the files the stages wrote (no tracking server is asked). The page is
self-contained and fits a 1,280 px window.
"""

from ftpipe.report.page import REPORT, register_report, run_report, stage_report, write_run_report

__all__ = ["REPORT", "register_report", "run_report", "stage_report", "write_run_report"]
