"""What `ftpipe recommend` measures on tagged words (`data.task: token-classification`).

For sentences the recommender measures two things: the data's size (training rows in the
smallest class) and how well frozen features separate the classes (a cross-validated linear
probe on pooled features). For tagged words it measures the same two, word by word:

* **Size**: entity tokens per type, the training words tagged `B-X` or `I-X`, per type X (from
  prep's words per tag). The smallest type's count plays the part of the smallest class's rows
  and meets the same threshold, `recommend.large_per_class`.
* **Probe**: a seeded sample of `recommend.probe_rows` training sentences (every window of each)
  runs through the frozen model, and the last hidden state at each word's first sub-word (where
  prep's `word_ids` is >= 0) is that word's feature. A multinomial logistic regression on
  (feature, tag id) is cross-validated over `recommend.probe_folds` folds grouped by sentence:
  the words of one sentence share context, so a sentence is never both fit and scored. The
  out-of-fold tags are put back into their sentences in word order and scored as training
  scores a model (`ftpipe.tasks.entities`): strict IOB2 entity micro-F1, and token accuracy.

**The threshold: `recommend.similar_probe_f1`, entity F1 0.8.** The similarity signal `decide`
reads is the probe's lift over always guessing the majority: of accuracy for sentences, of
entity F1 for words, `(F1 - F1_majority) / (1 - F1_majority)`. Tagging every word with the most
frequent tag (`O` in any entity corpus) finds no entity, so that lift is the entity F1 itself.
The head a small, similar recommendation trains (feature extraction) is the same linear map of
the same frozen features as the probe, so the probe's F1 previews what the head alone will
reach; that is worth choosing only when it is close to what adapting the encoder gives.
Fine-tuned BERT-base reaches 0.924 on CoNLL-2003 test (../shared/data/README.md); at 0.8 a head
alone gives up about 10 points. Strict span F1 also sits lower than accuracy: one wrong word
fails a whole entity. Measured with this probe on 2,000 CoNLL-2003 training sentences,
all-MiniLM-L6-v2 (a checkpoint trained for sentence embeddings) reaches 0.59 at 91% token
accuracy: most words tagged right, many entities not exactly, a case for LoRA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.data.features import TOKENS, extract_features
from ftpipe.data.prepared import PreparedData, Split
from ftpipe.errors import FtpipeError
from ftpipe.tasks import Task
from ftpipe.tasks.token_classification import word_metrics

if TYPE_CHECKING:
    from ftpipe.strategies.recommend import Measurements, Recommendation

UNIT = "entity tokens"
"""What `Measurements.rows_per_class` counts for tagged words."""


@dataclass(frozen=True)
class WordProbe:
    """The per-token probe's cross-validated scores, and always guessing the majority tag's.

    Attributes:
        sentences: Sentences probed.
        words: Words scored (each sentence's words, once each).
        folds: Cross-validation folds, grouped by sentence.
        entity_f1: Strict IOB2 entity micro-F1 of all out-of-fold predictions.
        entity_f1_std: Its standard deviation over the folds.
        token_accuracy: Share of words tagged right, out of fold.
        token_accuracy_std: Its standard deviation over the folds.
        majority_accuracy: Token accuracy of tagging every word with the most frequent tag.
        majority_entity_f1: Entity F1 of the same (0.0 when that tag is `O`).
    """

    sentences: int
    words: int
    folds: int
    entity_f1: float
    entity_f1_std: float
    token_accuracy: float
    token_accuracy_std: float
    majority_accuracy: float
    majority_entity_f1: float

    @property
    def lift(self) -> float:
        """Entity F1 as lift over the majority tag's: the F1 itself when that tag is `O`."""
        return (self.entity_f1 - self.majority_entity_f1) / max(1.0 - self.majority_entity_f1, 1e-9)


def entity_tokens_per_type(words_per_tag: Mapping[str, int]) -> dict[str, int]:
    """Words tagged `B-X` or `I-X`, per entity type X, sorted by type.

    Args:
        words_per_tag: Words per tag over a split (prep's `words_per_tag`).
    """
    per_type: dict[str, int] = {}
    for tag, count in words_per_tag.items():
        if tag[:2] in ("B-", "I-"):
            per_type[tag[2:]] = per_type.get(tag[2:], 0) + int(count)
    return dict(sorted(per_type.items()))


def sample_sentences(sentences: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The rows of at most `size` sentences drawn at random (seeded), every window of each.

    Args:
        sentences: Each row's sentence id (`Split.sentences`).
        size: Most sentences to draw.
        seed: The draw's seed.

    Returns:
        The drawn rows' indices, in row order.
    """
    distinct = np.unique(sentences)
    drawn = np.random.default_rng(seed).permutation(distinct)[:size]
    return np.flatnonzero(np.isin(sentences, drawn))


def sentence_folds(sentences: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each word's fold, so that all words of a sentence share one (grouped K-fold).

    The distinct sentences are shuffled (seeded) and dealt to the folds in turn, so fold sizes
    differ by at most one sentence.

    Args:
        sentences: Each word's sentence id.
        folds: How many folds.
        seed: The shuffle's seed.

    Returns:
        A fold number in [0, folds) per word.
    """
    distinct, index = np.unique(sentences, return_inverse=True)
    fold_of = np.empty(len(distinct), dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(len(distinct))] = (
        np.arange(len(distinct)) % folds
    )
    return fold_of[index]


def word_features(
    backbone: nn.Module, split: Split, batch_size: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen model's last hidden state at every scored position (`word_ids` >= 0).

    Args:
        backbone: The base model, without a head.
        split: Tagged-word rows (with `token_labels`, `word_ids` and `sentences`).
        batch_size: Rows per forward pass.
        pad_id: The padding token id.

    Returns:
        Features float32 [words, hidden], and per word (sentence id, word index, tag id), both
        ordered by sentence and word.
    """
    assert split.word_ids is not None and split.token_labels is not None
    assert split.sentences is not None
    if not len(split):
        return np.empty((0, 0), dtype=np.float32), np.empty((0, 3), dtype=np.int64)
    # Every token's state, as feature extraction caches them, then the scored ones.
    tokens = extract_features(backbone, split, TOKENS, batch_size, pad_id, "probe")
    word_ids = np.concatenate(split.word_ids)
    at = np.flatnonzero(word_ids >= 0)
    sentence = np.repeat(split.sentences, split.lengths)
    words = np.stack([sentence[at], word_ids[at], np.concatenate(split.token_labels)[at]], 1)
    ordered = np.lexsort((words[:, 1], words[:, 0]))
    return tokens[at][ordered], words[ordered].astype(np.int64)


def out_of_fold(features: np.ndarray, tags: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each word's tag as predicted by a probe fit on the other folds' words.

    The probe is a standardised multinomial logistic regression. A fold whose complement holds
    one tag only predicts that tag.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.empty_like(tags)
    for fold in np.unique(folds):
        held = folds == fold
        fit_tags = tags[~held]
        if len(np.unique(fit_tags)) < 2:
            predicted[held] = fit_tags[0]
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        predicted[held] = probe.fit(features[~held], fit_tags).predict(features[held])
    return predicted


def probe_words(
    config: Config, split: Split, names: tuple[str, ...], backbone: nn.Module
) -> WordProbe:
    """Cross-validate the per-token probe on the rows of sampled sentences.

    Args:
        config: For `recommend.probe_folds` and `seed`.
        split: The sampled sentences' rows.
        names: The tag names, by tag id.
        backbone: The frozen base model.

    Raises:
        FtpipeError: If fewer than 2 sentences have a word to score.
    """
    pad_id = getattr(backbone.config, "pad_token_id", None) or 0
    features, words = word_features(backbone, split, 32, pad_id)
    sentences = len(np.unique(words[:, 0]))
    folds = min(config.recommend.probe_folds, sentences)
    if folds < 2:
        raise FtpipeError(
            "The per-token probe cross-validates by sentence and needs at least 2 training "
            "sentences with words to score. Add sentences, or raise recommend.probe_rows."
        )
    fold = sentence_folds(words[:, 0], folds, config.seed)
    predicted = out_of_fold(features, words[:, 2], fold)
    scored = np.column_stack([words[:, :2], predicted, words[:, 2]])
    per_fold = [word_metrics(scored[fold == f], names) for f in range(folds)]
    pooled = word_metrics(scored, names)
    majority = np.bincount(words[:, 2]).argmax()
    guessed = word_metrics(np.column_stack([words[:, :2], np.full(len(words), majority),
                                            words[:, 2]]), names)  # fmt: skip
    return WordProbe(
        sentences=sentences,
        words=len(words),
        folds=folds,
        entity_f1=pooled["entity_f1"],
        entity_f1_std=float(np.std([m["entity_f1"] for m in per_fold])),
        token_accuracy=pooled["token_accuracy"],
        token_accuracy_std=float(np.std([m["token_accuracy"] for m in per_fold])),
        majority_accuracy=guessed["token_accuracy"],
        majority_entity_f1=guessed["entity_f1"],
    )


def word_signals(
    config: Config, prepared: PreparedData, backbone: nn.Module
) -> tuple[dict[str, Any], Split]:
    """The size and probe fields of `Measurements` for tagged words, and the rows probed.

    `rows_per_class` holds entity tokens per type, `probe_rows` the sentences probed,
    `probe_accuracy` the token accuracy, `probe_lift` the entity F1's lift (see the module
    docstring), and `tagged_words` the training words; the probed rows serve the label-free
    domain signals too.

    Raises:
        FtpipeError: If no training word is tagged as an entity, or too few sentences.
    """
    assert prepared.labels is not None and prepared.splits["train"].sentences is not None
    words_per_tag = prepared.stats["splits"]["train"]["words_per_tag"]
    per_type = entity_tokens_per_type(words_per_tag)
    if not per_type:
        raise FtpipeError(
            "No training word is tagged as an entity (B-X or I-X), so there is nothing to "
            "recommend a strategy for. Check data.label_column and the tags."
        )
    train = prepared.splits["train"]
    rows = train.subset(sample_sentences(train.sentences, config.recommend.probe_rows, config.seed))
    probe = probe_words(config, rows, prepared.labels.names, backbone)
    signals = {
        "classes": len(per_type),
        "rows_per_class": per_type,
        "smallest_class_rows": min(per_type.values()),
        "probe_rows": probe.sentences,
        "probe_folds": probe.folds,
        "probe_accuracy": round(probe.token_accuracy, 4),
        "probe_accuracy_std": round(probe.token_accuracy_std, 4),
        "majority_accuracy": round(probe.majority_accuracy, 4),
        "probe_lift": round(probe.lift, 4),
        "unit": UNIT,
        "probe_words": probe.words,
        "probe_entity_f1": round(probe.entity_f1, 4),
        "probe_entity_f1_std": round(probe.entity_f1_std, 4),
        "majority_entity_f1": round(probe.majority_entity_f1, 4),
        "tagged_words": sum(words_per_tag.values()),
    }
    return signals, rows


def word_reasons(config: Config, m: Measurements, large: bool, probe_ok: bool) -> list[str]:
    """The size and probe lines of the explanation, for tagged words."""
    t = config.recommend
    return [
        "Entity tokens per type (training words tagged B-X or I-X): "
        + ", ".join(f"{name} {n:,}" for name, n in m.rows_per_class.items())
        + ".",
        f"{'Large' if large else 'Small'} data: the smallest of {m.classes} entity types has "
        f"{m.smallest_class_rows:,} entity tokens ({'at least' if large else 'under'} "
        f"recommend.large_per_class={t.large_per_class:,}).",
        f"A per-token linear probe on frozen features reaches an entity F1 of "
        f"{m.probe_entity_f1:.2f} ± {m.probe_entity_f1_std:.2f} ({m.probe_folds}-fold grouped "
        f"by sentence, {m.probe_words:,} words of {m.probe_rows:,} sentences) against "
        f"{m.majority_entity_f1:.2f} for tagging every word with the most frequent tag: a lift "
        f"of {m.probe_lift:.2f} ({'at least' if probe_ok else 'under'} "
        f"recommend.similar_probe_f1={t.similar_probe_f1}). Its token accuracy is "
        f"{m.probe_accuracy:.1%} against {m.majority_accuracy:.1%}.",
    ]


def supported(recommendation: Recommendation, task: Task) -> Recommendation:
    """The recommendation without the strategies `task` refuses (`Task.unsupported_strategies`).

    Refused names leave the suggested `strategy.name` choices.

    Raises:
        FtpipeError: If the task refuses the strategy picked.
    """
    refused = task.unsupported_strategies
    r = recommendation
    if r.strategy in refused:
        raise FtpipeError(
            f"ftpipe recommend picked strategy.name={r.strategy}, which data.task={task.name} "
            f"cannot train with: it {refused[r.strategy]}"
        )
    named = r.search_space["strategy.name"].removeprefix("choice([").removesuffix("])")
    allowed = ", ".join(name for name in named.split(", ") if name not in refused)
    return replace(r, search_space={**r.search_space, "strategy.name": f"choice([{allowed}])"})
