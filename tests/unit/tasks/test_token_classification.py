"""Token classification end to end on the tiny model: prep's three inputs, bad files, training.

The tiny vocabulary has no names, so its "entities" are products (`card`, `app`) and actions
(`password reset`): learnable from the words alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.features import TOKENS, extract_features
from ftpipe.data.prepared import PrepDir, load_prepared
from ftpipe.errors import ConfigError, DataError
from ftpipe.strategies import prepare
from ftpipe.train.batching import BatchSource
from ftpipe.train.local import train_local
from ftpipe.train.model import load_base_model
from ftpipe.train.predictor import Predictor
from tests.helpers import ftpipe, write_jsonl

FILLER = ["my", "order", "is", "late", "please", "help", "the", "was", "charged", "twice"]


def sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Seeded sentences of filler words with 0 to 2 entities each."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(int(rng.integers(3, 7))):
            roll = rng.random()
            if roll < 0.15:
                words += ["password", "reset"]
                tags += ["B-ACT", "I-ACT"]
            elif roll < 0.3:
                words.append(str(rng.choice(["card", "app"])))
                tags.append("B-PROD")
            else:
                words.append(str(rng.choice(FILLER)))
                tags.append("O")
        rows.append((words, tags))
    return rows


def write_conll(path, rows, docstart: bool = False, newline: str = "\n") -> str:
    lines = ["-DOCSTART- -X- O O", ""] if docstart else []
    for words, tags in rows:
        lines += [f"{w} NN O {t}" for w, t in zip(words, tags, strict=True)] + [""]
    path.write_bytes(newline.join(lines).encode())
    return str(path)


def token_config(tmp_path, train: str, *overrides: str, **data):
    raw = {
        "seed": 3,
        "data": {
            "task": "token-classification",
            "train": train,
            "output_dir": str(tmp_path / "prep"),
            "max_length": 16,
            "eval_fraction": 0.25,
            "duplicates": "keep",
            **data,
        },
        "model": {"name": "unused"},
        "strategy": {"name": "full"},
        "train": {
            "batch_size": 8,
            "epochs": 4,
            "lr": 3e-3,
            "head_lr": 3e-2,
            "output_dir": str(tmp_path / "train"),
            "cache_dir": str(tmp_path / "cache"),
            "log_every_steps": 5,
        },
    }
    return validate_config(apply_overrides(raw, overrides))


@pytest.fixture
def config_for(tmp_path, tiny_model_dir):
    def build(train: str, *overrides: str, **data):
        return token_config(tmp_path, train, f"model.name={tiny_model_dir}", *overrides, **data)

    return build


def test_conll_jsonl_and_parquet_prepare_the_same_rows_with_entity_stats(tmp_path, config_for):
    rows = sentences(40)
    conll = write_conll(tmp_path / "d.conll", rows, docstart=True, newline="\r\n")
    jsonl = str(write_jsonl(tmp_path / "d.jsonl", [{"tokens": w, "tags": t} for w, t in rows]))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"tokens": [w for w, _ in rows], "tags": [t for _, t in rows]}),
                   parquet)  # fmt: skip
    prepared = []
    for source in (conll, jsonl, str(parquet)):
        result = run_prep(config_for(source))
        split = pq.read_table(PrepDir(result.output_dir).split_path("train")).to_pydict()
        prepared.append((split["text"], split["tags"], split["token_labels"], result.stats))
    assert prepared[0][:3] == prepared[1][:3] == prepared[2][:3]
    stats = prepared[0][3]
    assert stats["labels"] == ["B-ACT", "B-PROD", "I-ACT", "O"]
    train, held = stats["splits"]["train"], stats["splits"]["eval"]
    entities = {kind: sum(tags.count(f"B-{kind}") for _, tags in rows) for kind in ("ACT", "PROD")}
    counted = {k: train["entities_per_type"][k] + held["entities_per_type"][k] for k in entities}
    assert counted == entities
    assert train["tag_scheme"] == "IOB2"
    assert train["repaired_tags"] == 0


def test_an_i_tag_opening_an_entity_is_repaired_and_counted_by_default(tmp_path, config_for):
    rows = [*sentences(20), (["my", "card", "was", "charged"], ["O", "I-PROD", "O", "O"])]
    result = run_prep(config_for(write_conll(tmp_path / "d.conll", rows)))
    assert result.stats["splits"]["train"]["repaired_tags"] == 1
    tables = [pq.read_table(PrepDir(result.output_dir).split_path(s)) for s in ("train", "eval")]
    tags = [t for table in tables for t in table.column("tags").to_pylist()]
    assert "O B-PROD O O" in tags and not any(t.startswith("I-PROD") for t in tags)


def bad_file(tmp_path, case: str) -> tuple[str, dict]:
    """An input with one bad sentence, after 20 good ones, and the data keys it needs."""
    good = sentences(20)
    if case == "length_mismatch":
        records = [{"tokens": w, "tags": t} for w, t in good]
        records.append({"tokens": ["my", "card"], "tags": ["O"]})
        return str(write_jsonl(tmp_path / "d.jsonl", records)), {}
    if case == "empty_sentence":
        records = [{"tokens": w, "tags": t} for w, t in good] + [{"tokens": [], "tags": []}]
        return str(write_jsonl(tmp_path / "d.jsonl", records)), {}
    if case == "not_a_list":
        records = [{"tokens": w, "tags": t} for w, t in good] + [{"tokens": "my card", "tags": []}]
        return str(write_jsonl(tmp_path / "d.jsonl", records)), {}
    bad = (["my", "app", "crash"], ["O", "I-PROD", "O"])
    if case == "unknown_tag":
        bad = (["my", "app", "crash"], ["O", "B-PROD", "B-BUG"])
        labels = {"labels": ["O", "B-ACT", "I-ACT", "B-PROD", "I-PROD"]}
        return write_conll(tmp_path / "d.conll", [*good, bad]), labels
    return write_conll(tmp_path / "d.conll", [*good, bad]), {"repair_spans": False}


def conll_line(path: str, word: str) -> int:
    """The 1-based line of the last line starting with `word` (the bad sentence's)."""
    lines = Path(path).read_text().split("\n")
    return max(i for i, line in enumerate(lines, 1) if line.startswith(word + " "))


@pytest.mark.parametrize(
    ("case", "where", "says"),
    [
        ("length_mismatch", "line 21", "2 words but 1 tags"),
        ("empty_sentence", "line 21", "no words"),
        ("not_a_list", "line 21", "'tokens' holds a str, not a list of strings"),
        ("unknown_tag", "crash", "tag 'B-BUG' is not one of"),
        ("broken_span", "app", "I-PROD follows O, so it opens no entity"),
    ],
)
def test_each_bad_file_is_refused_naming_the_file_and_the_line(
    tmp_path, config_for, case, where, says
):
    source, data = bad_file(tmp_path, case)
    if not where.startswith("line"):  # a CoNLL word: its own line
        where = f"line {conll_line(source, where)}"
    with pytest.raises(DataError) as error:
        run_prep(config_for(source, **data))
    message = str(error.value)
    assert f"{source} has 1 invalid row" in message
    assert f"{where}:" in message and says in message, message
    assert not (tmp_path / "prep").exists(), "nothing half-written is left"


def test_a_bad_file_exits_2_from_the_command_line(tmp_path, tiny_model_dir):
    source, data = bad_file(tmp_path, "broken_span")
    config = token_config(tmp_path, source, f"model.name={tiny_model_dir}", **data)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    result = ftpipe("prep", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"line {conll_line(source, 'app')}" in result.stderr


@pytest.mark.parametrize("strategy", ["full", "freeze", "feature-extraction", "lora"])
def test_training_lowers_the_loss_and_scores_entities(tmp_path, config_for, strategy):
    rows = sentences(120, seed=1)
    source = str(write_jsonl(tmp_path / "d.jsonl", [{"tokens": w, "tags": t} for w, t in rows]))
    config = config_for(source, f"strategy.name={strategy}")
    run_prep(config)
    outcome = train_local(config)
    history = json.loads(
        (max((tmp_path / "train").rglob("step-*")) / "trainer_state.json").read_text()
    )["history"]
    losses = [entry["loss"] for entry in history]
    if strategy == "feature-extraction":
        # one step, the fit on cached per-token features, from zero weights: every tag
        # equally likely, a loss of ln(tags), then the converged token head
        tags = len(PrepDir.open(config.data.output_dir).labels.names)
        assert losses[-1] < 0.8 * np.log(tags), losses
        assert list((tmp_path / "cache").rglob("train.npy")), "no per-token features cached"
    else:
        assert losses[-1] < losses[0] * 0.8, losses
    assert set(outcome.metrics) >= {"entity_f1", "entity_precision", "token_accuracy", "loss"}
    assert outcome.metrics["entity_f1"] > 0.5, outcome.metrics
    assert exported_token_accuracy(config) == pytest.approx(outcome.metrics["token_accuracy"])


def exported_token_accuracy(config) -> float:
    """The export, loaded as predict loads it, tags the eval sentences: the share tagged right."""
    prep = PrepDir.open(config.data.output_dir)
    table = pq.read_table(prep.split_path("eval")).to_pydict()
    sentences = dict(zip(table["sentence"], zip(table["text"], table["tags"], strict=True),
                         strict=True))  # fmt: skip
    words = [text.split(" ") for text, _ in sentences.values()]
    gold = np.concatenate([[prep.labels.names.index(t) for t in tags.split(" ")]
                           for _, tags in sentences.values()])  # fmt: skip
    predictor = Predictor.load(Path(config.train.output_dir) / "model")
    predicted = np.concatenate([p.argmax(1) for p in predictor.word_probabilities(words)])
    return float(np.mean(predicted == gold))


def test_every_word_of_a_windowed_sentence_is_scored_exactly_once(tmp_path, config_for):
    long = (["my", "card", "was", "charged", "twice", "please", "help"] * 3,
            ["O", "B-PROD", "O", "O", "O", "O", "O"] * 3)  # fmt: skip
    rows = [*sentences(30), long]
    source = str(write_jsonl(tmp_path / "d.jsonl", [{"tokens": w, "tags": t} for w, t in rows]))
    config = config_for(source, max_length=10, stride=3)
    prep = PrepDir(run_prep(config).output_dir)
    windows = 0
    for name in ("train", "eval"):
        table = pq.read_table(prep.split_path(name)).to_pydict()
        scored: dict[int, list[int]] = {}
        for sentence, word_ids in zip(table["sentence"], table["word_ids"], strict=True):
            scored.setdefault(sentence, []).extend(w for w in word_ids if w >= 0)
        texts = dict(zip(table["sentence"], table["text"], strict=True))
        for sentence, words in scored.items():
            assert sorted(words) == list(range(len(texts[sentence].split(" "))))
        windows += prep.stats["splits"][name]["windows"]
    assert windows == 3  # 21 one-piece words: 8 in the first window, 5 new in each of 3 more


def test_a_pooling_that_makes_one_vector_per_sentence_is_refused(tmp_path, config_for):
    from ftpipe.tasks import get_task

    config = config_for("d.jsonl", "strategy.name=feature-extraction", "strategy.pooling=mean")
    with pytest.raises(ConfigError, match=r"strategy\.pooling=mean makes one vector of each row"):
        get_task(config.data.task).check_config(config)


def test_cached_token_features_give_the_live_logits_and_labels(tmp_path, config_for):
    # A sentence longer than a window, so one sentence spans several cached rows.
    long = (["my", "card", "was", "charged", "twice", "please", "help"] * 3,
            ["O", "B-PROD", "O", "O", "O", "O", "O"] * 3)  # fmt: skip
    rows = [*sentences(20), long]
    source = str(write_jsonl(tmp_path / "d.jsonl", [{"tokens": w, "tags": t} for w, t in rows]))
    config = config_for(source, "strategy.name=feature-extraction", max_length=10, stride=3)
    data = load_prepared(run_prep(config).output_dir)
    model = prepare(load_base_model(config, data.labels)[0], config).model
    split, pad_id, cpu = data.splits["train"], model.config.pad_token_id, torch.device("cpu")
    features = extract_features(model.backbone, split, TOKENS, batch_size=4, pad_id=pad_id)
    assert features.shape == (split.lengths.sum(), model.config.hidden_size)

    cached = BatchSource(split, pad_id, data.task, torch.from_numpy(features), per_token=True)
    live = BatchSource(split, pad_id, data.task).batch(np.arange(len(split)), cpu)
    from_cache = cached.batch(np.arange(len(split)), cpu)
    torch.testing.assert_close(from_cache["labels"], live["labels"])
    real = live["attention_mask"].bool()
    with torch.no_grad():
        inputs = {k: v for k, v in live.items() if k != "labels"}
        torch.testing.assert_close(
            model(features=from_cache["features"]).logits[real], model(**inputs).logits[real]
        )
    # the head fit reads one vector per token that has a tag, and that tag
    matrix, tags = cached.head_matrix(cpu)
    assert len(matrix) == len(tags) == int((live["labels"] != -100).sum())
    torch.testing.assert_close(tags, live["labels"][live["labels"] != -100])
