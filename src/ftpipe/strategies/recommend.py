"""`ftpipe recommend`: pick a strategy from measurements of the data, not from folklore.

Two axes decide the case (see RecommendConfig for the thresholds):

* **size**: rows in the smallest class (for tagged words, entity tokens of the rarest type);
* **similarity to pretraining**, measured without labels (ftpipe.strategies.domain): how far
  the text's mean embedding lies from shipped reference prose, the masked-LM pseudo-perplexity
  against the reference's where the checkpoint has that head, and prep's unknown-token rate and
  word pieces per word (text far from the pretraining corpus splits into more pieces and hits
  the unknown token more often).

A linear probe on frozen pooled features (cross-validated, as lift over always guessing the
majority class) says how easy the task is on frozen features; in the small-and-similar case
it picks between a head alone and LoRA. For tagged words both are measured word by word
(ftpipe.strategies.word_probe), and no strategy the task refuses is recommended. Language models
have no labels: their targets are measured instead (ftpipe.strategies.lm_recommend).

| | similar | dissimilar |
| --- | --- | --- |
| small | feature-extraction if the probe separates the classes, else LoRA | freeze the lower half |
| large | full fine-tuning, small lr | full fine-tuning, higher lr, longer |
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ftpipe.artifacts import localize
from ftpipe.config.load import validate_config
from ftpipe.config.schema import Config
from ftpipe.data.features import extract_features, pooling_for
from ftpipe.data.prepared import PreparedData, Split, load_prepared
from ftpipe.errors import FtpipeError
from ftpipe.hub import resolve_model
from ftpipe.strategies.domain import measure_domain
from ftpipe.strategies.word_probe import supported, word_reasons, word_signals
from ftpipe.tasks import get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurements:
    """What the recommendation is based on.

    For tagged words (`unit` "entity tokens") the size fields count entity tokens per type,
    `probe_rows` sentences, `probe_accuracy` is token accuracy and `probe_lift` the per-token
    probe's entity F1 lift (ftpipe.strategies.word_probe).
    """

    classes: int
    rows_per_class: dict[str, int]
    smallest_class_rows: int
    probe_rows: int
    probe_folds: int
    probe_accuracy: float
    probe_accuracy_std: float
    majority_accuracy: float
    probe_lift: float
    unknown_token_rate: float
    pieces_per_word: float
    embedding_distance: float
    perplexity_ratio: float | None
    perplexity_note: str
    unit: str = "rows"
    probe_words: int | None = None  # tagged words only, as are the fields below
    probe_entity_f1: float | None = None
    probe_entity_f1_std: float | None = None
    majority_entity_f1: float | None = None
    tagged_words: int | None = None  # what a cached token head is fit on


@dataclass(frozen=True)
class Recommendation:
    """The strategy, its settings and search space, and why."""

    case: str
    strategy: str
    freeze_layers: int
    lr_range: tuple[float, float]
    head_lr_range: tuple[float, float]
    search_space: dict[str, str]
    reasons: list[str]
    measurements: Measurements
    num_blocks: int = field(default=0)

    def text(self) -> str:
        """A readable explanation for a person (freezing every block trains a head alone too)."""
        lines = [
            f"Recommended strategy: {self.strategy}"
            + (f" (freeze the lowest {self.freeze_layers} of {self.num_blocks} blocks)"
               if self.strategy == "freeze" else ""),
            f"Case: {self.case.replace('-', ' and ')}.",
            *[f"- {reason}" for reason in self.reasons],
            ("Learning rates: backbone frozen, "
             if self.strategy == "feature-extraction" or self.freeze_layers >= self.num_blocks > 0
             else f"Learning rates: backbone {self.lr_range[0]:.0e} to {self.lr_range[1]:.0e}, ")
            + f"head {self.head_lr_range[0]:.0e} to {self.head_lr_range[1]:.0e}.",
            "Suggested search space:",
            *[f"  {path}: {sampler}" for path, sampler in self.search_space.items()],
        ]  # fmt: skip
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """A JSON-ready mapping, for the pipeline."""
        return asdict(self)


def resolve_auto(config: Config) -> Config:
    """Replace `strategy.name=auto` with the recommendation `ftpipe recommend` wrote.

    Raises:
        FtpipeError: If the strategy is auto and there is no recommendation yet.
    """
    if config.strategy.name != "auto":
        return config
    path = localize(config.recommend.output_dir) / "recommendation.json"
    if not path.exists():
        raise FtpipeError(
            f"strategy.name=auto needs a recommendation, and {path} does not exist. Run "
            "`ftpipe recommend` with the same config first, or set strategy.name."
        )
    picked = json.loads(path.read_text())
    log.info("strategy.name=auto: using %s from %s", picked["strategy"], path)
    raw = config.model_dump(mode="json")
    raw["strategy"] |= {"name": picked["strategy"], "freeze_layers": picked["freeze_layers"]}
    return validate_config(raw)  # the guardrails see the resolved strategy


def run_recommend(config: Config) -> Recommendation:
    """Measure the prepared data with the configured model and write the recommendation.

    Raises:
        FtpipeError: If prep has not run for this config, or the model cannot be loaded.
    """
    prepared = load_prepared(config.data.output_dir)
    if prepared.stats["model"] != config.model.name:
        raise FtpipeError(
            f"{config.data.output_dir} was prepared for model.name={prepared.stats['model']!r}, "
            f"not {config.model.name!r}, so its token ids mean nothing to this model. Run "
            "`ftpipe prep` with this config first, or set data.output_dir to that model's prep."
        )
    if get_task(config.data.task).labelled:
        backbone = _load_backbone(config)
        measurements = measure(config, prepared, backbone)
        recommendation = decide(config, measurements, backbone.config.num_hidden_layers)
    else:  # language models; imported here, as lm_recommend builds on this module
        from ftpipe.strategies.lm_recommend import recommend_lm

        recommendation = recommend_lm(config, prepared)
    output = Path(config.recommend.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "recommendation.json").write_text(
        json.dumps(recommendation.to_json(), indent=2, sort_keys=True) + "\n"
    )
    (output / "recommendation.txt").write_text(recommendation.text())
    return recommendation


def measure(config: Config, prepared: PreparedData, backbone) -> Measurements:
    """The data's size, a cross-validated probe on frozen features, and the domain signals.

    Size and probe are the task's: per row and class (`_row_signals`), or for tagged words per
    word and entity type (`ftpipe.strategies.word_probe.word_signals`); the label-free domain
    signals are measured on the probed rows either way.
    """
    signals_of = word_signals if prepared.task.pretokenized else _row_signals
    signals, rows = signals_of(config, prepared, backbone)
    domain = measure_domain(config, backbone, rows.input_ids)
    stats = prepared.stats["splits"]["train"]
    return Measurements(
        **signals,
        unknown_token_rate=stats["unknown_token_rate"],
        pieces_per_word=stats["pieces_per_word"],
        embedding_distance=domain.embedding_distance,
        perplexity_ratio=(
            None if domain.perplexity_ratio is None else round(domain.perplexity_ratio, 3)
        ),
        perplexity_note=domain.pseudo_perplexity_note,
    )


def _row_signals(config: Config, prepared: PreparedData, backbone) -> tuple[dict, Split]:
    """Rows per class and a probe on pooled features: `Measurements`' size and probe fields."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    settings = config.recommend
    train = prepared.splits["train"]
    counts = np.bincount(train.labels, minlength=len(prepared.labels.names))
    sample = _stratified_sample(train.labels, settings.probe_rows, config.seed)
    labels = train.labels[sample]
    folds = min(settings.probe_folds, int(np.bincount(labels)[np.bincount(labels) > 0].min()))
    if folds < 2:
        raise FtpipeError(
            "Every class needs at least 2 training rows for the probe's cross-validation. Add "
            "rows to the smallest class, or raise recommend.probe_rows."
        )
    pooling = pooling_for(config, backbone)
    pad_id = backbone.config.pad_token_id or 0
    rows = train.subset(sample)
    features = extract_features(backbone, rows, pooling, 32, pad_id, "probe")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    scores = cross_val_score(probe, features, labels, cv=splitter)
    majority = float(np.bincount(labels).max() / len(labels))
    accuracy = float(scores.mean())
    signals = dict(
        classes=int((counts > 0).sum()),
        rows_per_class=dict(zip(prepared.labels.names, map(int, counts), strict=True)),
        smallest_class_rows=int(counts[counts > 0].min()),
        probe_rows=len(sample),
        probe_folds=folds,
        probe_accuracy=round(accuracy, 4),
        probe_accuracy_std=round(float(scores.std()), 4),
        majority_accuracy=round(majority, 4),
        probe_lift=round((accuracy - majority) / max(1.0 - majority, 1e-9), 4),
    )  # fmt: skip
    return signals, rows


def decide(config: Config, m: Measurements, num_blocks: int) -> Recommendation:
    """Map measurements to one of the four cases, with lr ranges and a search space."""
    t = config.recommend
    large = m.smallest_class_rows >= t.large_per_class
    probe_ok = m.probe_lift >= (t.similar_probe_lift if m.unit == "rows" else t.similar_probe_f1)
    vocab_ok = (
        m.unknown_token_rate <= t.max_unknown_rate and m.pieces_per_word <= t.max_pieces_per_word
    )
    near = m.embedding_distance <= t.max_embedding_distance and (
        m.perplexity_ratio is None or m.perplexity_ratio <= t.max_perplexity_ratio
    )
    reasons = _reasons(config, m, large, probe_ok, vocab_ok, near)
    # Say which signal failed: a vocabulary mismatch is a different problem from text whose
    # words are familiar but whose language is not.
    mismatch = (
        "the text is far from the pretraining vocabulary"
        if not vocab_ok
        else "the text lies far from general English prose"
    )
    if large:
        plan = large_plan(near and vocab_ok, vocab_ok, mismatch)
    else:
        # The vectors a cached head is fit on: rows, or for tagged words the words.
        rows = m.tagged_words or max(sum(m.rows_per_class.values()), 1)
        plan = small_plan(near and vocab_ok, probe_ok, num_blocks, rows, mismatch)
    *picked, reason = plan
    recommendation = Recommendation(*picked, [*reasons, reason], m, num_blocks)
    return supported(recommendation, get_task(config.data.task))  # none the task refuses


_Range = tuple[float, float]
Plan = tuple[str, str, int, _Range, _Range, dict[str, str], str]
"""case, strategy, freeze_layers, lr range, head lr range, search space, the reason."""


def loguniform(path: str, bounds: _Range) -> tuple[str, str]:
    """A search-space entry: `path` drawn log-uniformly between the bounds."""
    return path, f"loguniform({bounds[0]:g}, {bounds[1]:g})"


def small_plan(similar: bool, probe_ok: bool, num_blocks: int, rows: int, mismatch: str) -> Plan:
    """Small data: a head alone or LoRA on familiar text, else freeze the lower half."""
    if similar and probe_ok:
        head_lr = (5e-4, 5e-3)
        space = dict([
            ("strategy.name", "choice([feature-extraction, lora])"),
            loguniform("train.head_lr", head_lr),
            # The L2 strength of the cached head's convex fit, its one real knob: in
            # scikit-learn's terms C = 1 / (rows * weight_decay) from 0.1 to 100.
            ("train.weight_decay", f"loguniform({0.01 / rows:.2g}, {10 / rows:.2g})"),
        ])  # fmt: skip
        reason = "The frozen features already separate the classes, so train only a head."
        return "small-similar", "feature-extraction", 0, (1e-5, 5e-5), head_lr, space, reason
    if similar:
        lr, head_lr = (1e-4, 1e-3), (5e-4, 5e-3)
        space = dict([
            ("strategy.name", "choice([lora, feature-extraction])"),
            loguniform("train.lr", lr), loguniform("train.head_lr", head_lr),
        ])  # fmt: skip
        reason = (
            "Familiar text, but the frozen features separate these classes only partly: adapt "
            "every layer a little (LoRA) rather than train a head alone."
        )
        return "small-similar", "lora", 0, lr, head_lr, space, reason
    k = max(num_blocks // 2, 1)
    lr, head_lr = (1e-5, 5e-5), (1e-4, 1e-3)
    depths = sorted({max(k - 1, 0), k, min(k + 1, num_blocks - 1)})
    space = dict([
        ("strategy.name", "choice([freeze])"), ("strategy.freeze_layers", f"choice({depths})"),
        loguniform("train.lr", lr), loguniform("train.head_lr", head_lr),
    ])  # fmt: skip
    reason = (
        f"Too little data to move every layer safely, and {mismatch}: keep the general lower "
        "layers frozen and adapt the upper ones."
    )
    return "small-dissimilar", "freeze", k, lr, head_lr, space, reason


def large_plan(similar: bool, vocab_ok: bool, mismatch: str) -> Plan:
    """Large data: full fine-tuning, at a small lr on familiar text, else higher and longer."""
    if similar:
        lr, head_lr = (1e-5, 3e-5), (1e-4, 5e-4)
        space = dict([("strategy.name", "choice([full, lora])"), loguniform("train.lr", lr)])
        reason = "Enough data to fine-tune everything; a small lr keeps what pretraining learned."
        return "large-similar", "full", 0, lr, head_lr, space, reason
    lr, head_lr = (2e-5, 1e-4), (1e-4, 1e-3)
    space = dict([
        ("strategy.name", "choice([full])"), loguniform("train.lr", lr),
        ("train.epochs", "choice([3, 5, 8])"),
    ])  # fmt: skip
    reason = (
        f"Enough data, and {mismatch}: fine-tune everything at a higher lr and consider training "
        "longer" + ("." if vocab_ok else " (or from scratch if even that underfits).")
    )
    return "large-dissimilar", "full", 0, lr, head_lr, space, reason


def _load_backbone(config: Config):
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(
            resolve_model(config.model.name),
            revision=config.model.revision,
            trust_remote_code=False,
            use_safetensors=True,
        )
    except Exception as exc:  # Hub and file errors come in many types
        raise FtpipeError(
            f"Cannot load model.name={config.model.name!r}: {' '.join(str(exc).split())}. Use "
            "the built-in alias all-MiniLM-L6-v2 or a local model directory with safetensors."
        ) from None


def _stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most `size` rows, each class in proportion (at least 2 where it has them)."""
    if len(labels) <= size:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(2, round(size * len(members) / len(labels)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def _reasons(
    config: Config, m: Measurements, large: bool, probe_ok: bool, vocab_ok: bool, near: bool
) -> list[str]:
    """What was measured, and which side of each threshold it fell on."""
    t = config.recommend
    size_and_probe = word_reasons(config, m, large, probe_ok) if m.unit != "rows" else [
        "Training rows per class: "
        + ", ".join(f"{name} {n:,}" for name, n in m.rows_per_class.items())
        + ".",
        f"{'Large' if large else 'Small'} data: the smallest of {m.classes} classes has "
        f"{m.smallest_class_rows:,} training rows ({'at least' if large else 'under'} "
        f"recommend.large_per_class={t.large_per_class:,}).",
        f"A linear probe on frozen features reaches {m.probe_accuracy:.1%} ± "
        f"{m.probe_accuracy_std:.1%} ({m.probe_folds}-fold, {m.probe_rows:,} rows) against "
        f"{m.majority_accuracy:.1%} for the majority class: a lift of {m.probe_lift:.2f} "
        f"({'at least' if probe_ok else 'under'} recommend.similar_probe_lift="
        f"{t.similar_probe_lift}).",
    ]  # fmt: skip
    return [
        *size_and_probe,
        f"The tokenizer sees {m.unknown_token_rate:.2%} unknown tokens and "
        f"{m.pieces_per_word:.2f} pieces per word ("
        + ("within" if vocab_ok else "beyond")
        + f" recommend.max_unknown_rate={t.max_unknown_rate} and "
        f"recommend.max_pieces_per_word={t.max_pieces_per_word}).",
        _domain_reason(config, m, near),
    ]  # fmt: skip


def _domain_reason(config: Config, m: Measurements, near: bool) -> str:
    """The label-free signals against the reference prose, and their thresholds."""
    t = config.recommend
    measured = m.perplexity_ratio is not None
    return (
        f"The text's mean embedding lies {m.embedding_distance:.3f} (cosine distance) from the "
        "shipped reference prose's"
        + (f", and its masked-LM pseudo-perplexity is {m.perplexity_ratio:.2f}x the reference's"
           if measured else f"; pseudo-perplexity {m.perplexity_note}")
        + f" ({'within' if near else 'beyond'} recommend.max_embedding_distance="
        f"{t.max_embedding_distance}"
        + (f" and recommend.max_perplexity_ratio={t.max_perplexity_ratio}" if measured else "")
        + ")."
    )  # fmt: skip
