"""Every input form reads to the same examples: CSV, TSV, JSONL, Parquet, no header,
fsspec URIs, and Hugging Face datasets (a local dataset directory here, offline)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftpipe.data.scan import Scan
from ftpipe.data.shards import write_rows
from ftpipe.data.sources import Stream
from ftpipe.tasks import get_task
from tests.helpers import balanced_rows, write_csv, write_jsonl

ROWS = [*balanced_rows(3), ['a "quoted" text, with a comma', "good"]]


class Kept:
    """What prep's second pass hands a split's shard writer, kept in memory."""

    task = get_task("sequence-classification")

    def __init__(self):
        self.texts, self.pairs, self.labels = [], [], []

    def add(self, texts, pairs, labels, locations):
        self.texts += texts
        self.pairs += pairs or []
        self.labels += labels


def kept_rows(source: str, config) -> Kept:
    """Prep's two passes over one input: check every row (`Scan`), then read the kept ones."""
    stream = Stream(source, config)
    scan = Scan(source, config, None, "")
    for table in stream.batches():
        scan.add(table)
    index = scan.finish(stream.batches)
    kept = Kept()
    write_rows(stream, {"train": index}, {"train": kept})
    return kept


def examples_of(source: str, make_config, **data):
    kept = kept_rows(source, make_config(train=source, **data).data)
    return list(zip(kept.texts, kept.labels, strict=True))


def written(tmp_path: Path, fmt: str) -> str:
    if fmt == "csv":
        return str(write_csv(tmp_path / "d.csv", ROWS))
    if fmt == "tsv":
        return str(write_csv(tmp_path / "d.tsv", ROWS, delimiter="\t"))
    if fmt == "jsonl":
        return str(
            write_jsonl(tmp_path / "d.jsonl", [{"text": t, "label": lab} for t, lab in ROWS])
        )
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS]}), path
    )
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_reads_the_same_rows(tmp_path, make_config, fmt):
    assert examples_of(written(tmp_path, fmt), make_config) == [tuple(r) for r in ROWS]


def test_tsv_is_read_literally_without_quote_processing(tmp_path, make_config):
    path = tmp_path / "glue.tsv"
    path.write_text('sentence\tlabel\n" a quote opens here\t1\nand "here\t0\n')
    rows = examples_of(str(path), make_config, text_column="sentence")
    assert rows == [('" a quote opens here', "1"), ('and "here', "0")]


def test_no_header_uses_column_indexes(tmp_path, make_config):
    path = write_csv(tmp_path / "d.csv", [[lab, t] for t, lab in ROWS], header=None)
    rows = examples_of(str(path), make_config, has_header=False, text_column=1, label_column=0)
    assert rows == [tuple(r) for r in ROWS]


def test_integer_labels_in_jsonl_become_names(tmp_path, make_config):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0}])
    assert examples_of(str(path), make_config) == [("x", "1"), ("y", "0")]


def test_text_pairs_are_read(tmp_path, make_config):
    path = write_csv(
        tmp_path / "p.csv", [["a", "b", "good"]], header=["premise", "hypothesis", "label"]
    )
    config = make_config(train=str(path), text_column="premise", text_pair_column="hypothesis").data
    kept = kept_rows(str(path), config)
    assert (kept.texts, kept.pairs, kept.labels) == (["a"], ["b"], ["good"])


def test_fsspec_file_uri_and_compression(tmp_path, make_config):
    import gzip

    plain = write_csv(tmp_path / "d.csv", ROWS)
    packed = tmp_path / "d.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = [tuple(r) for r in ROWS]
    assert examples_of(plain.as_uri(), make_config) == expected
    assert examples_of(str(packed), make_config) == expected


def test_memory_filesystem_uri(make_config):
    import fsspec

    with fsspec.open("memory://bucket/d.csv", "w") as handle:
        handle.write("text,label\nhello,good\nbye,bad\n")
    assert examples_of("memory://bucket/d.csv", make_config) == [("hello", "good"), ("bye", "bad")]


def test_hugging_face_dataset_by_name(tmp_path, make_config):
    # `hf:NAME:SPLIT` goes through datasets.load_dataset; NAME is a local dataset directory
    # here because this machine cannot reach the Hub.
    directory = tmp_path / "my_dataset"
    directory.mkdir()
    write_csv(directory / "train.csv", ROWS)
    rows = examples_of(f"hf:{directory}:train", make_config)
    assert rows == [tuple(r) for r in ROWS]


def test_hugging_face_class_labels_keep_their_names(tmp_path, make_config):
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    directory = tmp_path / "saved"
    datasets.Dataset.from_dict(
        {"text": ["meh", "yay"], "label": [0, 1]}, features=features
    ).to_parquet(str(directory / "train.parquet"))
    (directory / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: text\n    dtype: string\n"
        "  - name: label\n    dtype:\n      class_label:\n        names:\n"
        "          '0': neg\n          '1': pos\n---\n"
    )
    assert examples_of(f"hf:{directory}:train", make_config) == [("meh", "neg"), ("yay", "pos")]


def test_hf_source_without_split_is_explained(make_config):
    from ftpipe.errors import DataError

    with pytest.raises(DataError, match="hf:NAME:SPLIT"):
        examples_of("hf:glue", make_config)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"text,label\r\nhello,good\r\nbye,bad\r\n", [("hello", "good"), ("bye", "bad")]),
        ("\ufefftext,label\nhello,good\n".encode(), [("hello", "good")]),
        (b'text,label\n"two\nlines",good\nnext,bad\n', [("two\nlines", "good"), ("next", "bad")]),
    ],
    ids=["crlf", "utf8-bom", "multi-line-field"],
)
def test_csv_quirks_read_as_intended(tmp_path, make_config, content, expected):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    assert examples_of(str(path), make_config) == expected


def test_multi_line_field_is_located_by_its_last_line(tmp_path, make_config):
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\n"two\nlines",\nnext,bad\n')
    config = make_config(train=str(path)).data
    tables = Stream(str(path), config).batches()
    assert [where for table in tables for where in table.locations] == ["line 3", "line 4"]


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path, make_config):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one\u2028two\u0085three", "label": "good"}\n', encoding="utf-8")
    assert examples_of(str(path), make_config) == [("one\u2028two\u0085three", "good")]


def test_parquet_integer_labels_become_names(tmp_path, make_config):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["x", "y"], "label": pa.array([1, 0], pa.int64())}), path)
    assert examples_of(str(path), make_config) == [("x", "1"), ("y", "0")]
