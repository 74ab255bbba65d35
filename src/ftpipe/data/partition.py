"""Pass 1 of prep across its inputs: read and check each one, then decide every row's split.

Three splits, each with one job: train is learned from; eval selects (the sweep's best trial,
training's best checkpoint); test, when there is one, is scored once by `evaluate` and the
promotion gate decides on it, so its interval is not biased by the selection. Tune and train
never read test.

eval and test come from their own files (`data.eval`, `data.test`) or are split off train,
stratified and seeded and keeping copies of a text on one side: test first (`data.test_fraction`
of each class, seed `seed + 3`), so that it stays the same when `data.eval_fraction` changes,
then eval (`data.eval_fraction` of each class of the whole, seed `seed`). A text in test is
removed from train and eval, a text in eval from train (`ftpipe.data.scan.drop_leakage`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from ftpipe.config.schema import Config, DataConfig
from ftpipe.data.scan import Index, Scan, drop_leakage
from ftpipe.data.sources import Stream
from ftpipe.data.split import split_rows
from ftpipe.data.validate import check_trainable, format_counts, label_variants
from ftpipe.errors import DataError
from ftpipe.tasks import LabelMap, Task, get_task

log = logging.getLogger(__name__)

HELD_OUT = ("eval", "test")
"""The held-out splits, each from its own file (`data.<name>`) or split off train."""

TEST_SEED_OFFSET = 3
"""Added to `seed` for the test split (eval's split uses `seed`, the samples `seed + 1, 2`)."""


def load_splits(config: Config) -> tuple[dict[str, Index], LabelMap, dict[str, Stream]]:
    """Pass 1: read and check the inputs; return each split's rows, the labels and the inputs.

    Raises:
        DataError: On unreadable or invalid inputs, a held-out file that is a copy of another
            input, or a split left empty or with labels train does not have.
    """
    data = config.data
    task = get_task(data.task)
    labelled = task.labelled
    streams = {"train": Stream(data.train, data)}
    train = _scan(streams["train"], data, data.labels, "data.labels")
    if labelled:
        check_trainable(train, task)
        _warn_label_variants(train, task)
    # Held-out files may only use labels the model can learn: declared ones, or those in train.
    if data.labels is not None:
        known, known_from = data.labels, "data.labels"
    else:
        known, known_from = sorted(train.class_counts(task)), f"the labels in {data.train}"
    files: dict[str, Index] = {}
    for name in HELD_OUT:
        source = getattr(data, name)
        if source is not None:
            streams[name] = Stream(source, data)
            files[name] = _scan(
                streams[name], data, known, known_from, _not_a_copy(streams, name, data)
            )
    if "test" in files:
        train = drop_leakage(train, files["test"], data.on_error, "test")
        if "eval" in files:
            files["eval"] = drop_leakage(files["eval"], files["test"], data.on_error, "test")
    if "eval" in files:
        train = drop_leakage(train, files["eval"], data.on_error, "eval")
    if files and labelled:
        check_trainable(train, task)
    labels = LabelMap.build(data.labels, list(train.class_counts(task)))
    splits = _split_off_train(train, files, labels, config)
    for name in HELD_OUT:
        if name in splits and not len(splits[name]):
            source = getattr(data, name)
            fix = f"Add rows to {source}" if source else f"Raise data.{name}_fraction, or add rows"
            raise DataError(f"The {name} set is empty after validation. {fix}.")
    seed = config.seed
    splits["train"] = _sample(splits["train"], data.max_train_rows, labels, seed + 1, task, "train")
    splits["eval"] = _sample(splits["eval"], data.max_eval_rows, labels, seed + 2, task, "eval")
    # Unlabelled tasks have one implicit class, "": nothing to warn about.
    _check_trained(splits["train"], labels, data.min_rows_per_class if labelled else 0, task)
    for name in HELD_OUT:
        if name in splits:
            _check_held_out(splits["train"], splits[name], labels, name, task)
    for rows in splits.values():
        if rows.dropped:
            log.warning(
                "%s: dropped %d rows (%s)",
                rows.source,
                rows.dropped.total(),
                format_counts(rows.dropped),
            )
    return splits, labels, streams


def _not_a_copy(streams: dict[str, Stream], name: str, data: DataConfig) -> Callable[[], None]:
    """A check that input `name` does not hold the same bytes as an input read before it."""

    def check() -> None:
        for other, stream in streams.items():
            if other != name and stream.digest == streams[name].digest:
                raise DataError(
                    f"data.{name} ({getattr(data, name)}) holds the same bytes as data.{other} "
                    f"({getattr(data, other)}), so {name} metrics would measure memorisation. "
                    f"Point data.{name} at held-out data, or set it to null to split one off "
                    "train."
                )

    return check


def _split_off_train(
    train: Index, files: dict[str, Index], labels: LabelMap, config: Config
) -> dict[str, Index]:
    """Train and the held-out splits: those not read from files are split off train, test first.

    See the module docstring for the shares and seeds.
    """
    data, task = config.data, get_task(config.data.task)
    splits = dict(files)
    share = {"eval": data.eval_fraction, "test": data.test_fraction}
    seeds = {"eval": config.seed, "test": config.seed + TEST_SEED_OFFSET}
    left = 1.0  # share of train's rows not split off yet
    for name in ("test", "eval"):
        if name in files or not share[name]:
            continue
        # Copies of a text (data.duplicates=keep) stay on one side, so the split cannot leak.
        kept, held = split_rows(
            train.strata(task, labels), share[name] / left, seeds[name], groups=train.groups
        )
        # Drops happened before the split, so they are counted once, on train.
        train, splits[name] = train.take(kept, train.dropped), train.take(held, Counter())
        left -= share[name]
    return {"train": train, **{name: splits[name] for name in HELD_OUT if name in splits}}


def _scan(
    stream: Stream,
    data: DataConfig,
    known: list[str] | None,
    known_from: str,
    check: Callable[[], None] | None = None,
) -> Index:
    """Read one input batch by batch and check it; `check` runs once it is read, if not empty."""
    log.info("Reading %s", stream.source)
    scan = Scan(stream.source, data, known, known_from)
    for table in stream.batches():
        scan.add(table)
    log.info("%s: %s rows", stream.source, f"{scan.rows:,}")
    if scan.rows and check is not None:
        check()
    index = scan.finish(stream.batches)
    if index.repaired:
        log.warning(
            "%s: repaired %d tag(s): an I-X that opened an entity became B-X (tag scheme %s). "
            "Set data.repair_spans=false to refuse such files instead.",
            stream.source,
            index.repaired,
            index.scheme,
        )
    return index


def _sample(
    rows: Index, keep: int | None, labels: LabelMap, seed: int, task: Task, split: str
) -> Index:
    """About `keep` of the rows, a share of each class (the stratified, seeded split)."""
    if keep is None or keep >= len(rows):
        return rows
    kept, _ = split_rows(rows.strata(task, labels), 1 - keep / len(rows), seed)
    log.info(
        "data.max_%s_rows: keeping %d of %d rows of %s", split, len(kept), len(rows), rows.source
    )
    return rows.take(kept, rows.dropped)


def _warn_label_variants(train: Index, task: Task) -> None:
    """Warn about labels that differ only in case, width, accents or invisible characters."""
    for group in label_variants(train.class_counts(task)):
        listed = ", ".join(f"{name!r} ({n} rows)" for name, n in group)
        log.warning(
            "%s: labels %s are variants of one another (they differ only in case, width, "
            "accents or invisible characters) and became separate classes. Write them one way "
            "in the data, or declare data.labels to have such variants refused.",
            train.source,
            listed,
        )


def _check_trained(train: Index, labels: LabelMap, min_rows: int, task: Task) -> None:
    """Warn about classes with fewer than `min_rows` training rows, or none."""
    trained = train.class_counts(task)
    thin = [f"{name!r} ({trained[name]})" for name in labels.names if 0 < trained[name] < min_rows]
    if thin:
        log.warning(
            "%s: class(es) %s have fewer than data.min_rows_per_class=%d training rows; a model "
            "learns little from so few. Add rows, or merge or remove these classes.",
            train.source,
            ", ".join(thin),
            min_rows,
        )
    for name in labels.names:
        if name not in trained:
            log.warning("Declared label %r has no training rows in %s", name, train.source)


def _check_held_out(
    train: Index, held_out: Index, labels: LabelMap, split: str, task: Task
) -> None:
    """Every held-out class needs training rows; a trained class without held-out rows warns."""
    trained = train.class_counts(task)
    scored = set(held_out.class_counts(task))
    untrained = sorted(scored - set(trained))
    if untrained:
        raise DataError(
            f"{split.capitalize()} label(s) {', '.join(map(repr, untrained))} in "
            f"{held_out.source} have no training rows left in {train.source} (dropped: "
            f"{format_counts(train.dropped) or 'none'}). "
            f"Add training rows for them, or remove them from the {split} set."
        )
    for name in labels.names:
        if name in trained and name not in scored:
            log.warning(
                "Label %r has no %s rows in %s, so its metrics cannot be measured. Add %s rows "
                "of it.",
                name,
                split,
                held_out.source,
                split,
            )
