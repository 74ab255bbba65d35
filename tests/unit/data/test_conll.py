"""CoNLL inputs read as one row per sentence: columns "tokens" and "tags", numbered by the line
of the sentence's first word, whatever the separators, line endings and document markers."""

import gzip
import hashlib
import time
from pathlib import Path

import pytest

from ftpipe.config.schema import DataConfig
from ftpipe.data import parse
from ftpipe.data.parse import Table
from ftpipe.data.sources import Stream
from ftpipe.errors import DataError

CONLL2003_TRAIN = Path("/work/shared/data/conll2003/train.txt")

TWO_SENTENCES = "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n\nPeter\tB-PER\nBlackburn\tI-PER\n"
FOUR_COLUMNS = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU NNP B-NP B-ORG\n"
    "rejects VBZ B-VP O\n"
    "\n"
    "Peter NNP B-NP B-PER\n"
    "Blackburn  NNP\tB-NP   I-PER\n"
)


def write(tmp_path: Path, text: str | bytes, name: str = "train.conll") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    return path


def config_for(path: Path, **data) -> DataConfig:
    return DataConfig(train=str(path), task="token-classification", **data)


def read(path: Path, **data) -> list[Table]:
    return list(Stream(str(path), config_for(path, **data)).batches())


def sentences(path: Path, **data) -> list[tuple[list[str], list[str]]]:
    tables = read(path, **data)
    assert all(error is None for table in tables for error in table.errors)
    return [
        pair
        for table in tables
        for pair in zip(table.columns["tokens"], table.columns["tags"], strict=True)
    ]


EXPECTED = [
    (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
]


@pytest.mark.parametrize("name", ["train.conll", "train.iob", "train.bio", "train.txt"])
def test_tab_separated_lines_read_as_one_row_per_sentence(tmp_path, name):
    path = write(tmp_path, TWO_SENTENCES, name)
    (table,) = read(path)
    assert list(table.columns) == ["tokens", "tags"]
    assert table.unit == "line"
    assert table.start == 0
    assert list(zip(table.columns["tokens"], table.columns["tags"], strict=True)) == EXPECTED


def test_space_separated_four_columns_take_the_last_field_as_the_tag(tmp_path):
    path = write(tmp_path, FOUR_COLUMNS)
    assert sentences(path) == [(["EU", "rejects"], ["B-ORG", "O"]), EXPECTED[1]]
    assert sentences(path, tag_column=3) == sentences(path)


def test_tag_column_picks_the_field(tmp_path):
    path = write(tmp_path, FOUR_COLUMNS)
    assert sentences(path, tag_column=1) == [
        (["EU", "rejects"], ["NNP", "VBZ"]),
        (["Peter", "Blackburn"], ["NNP", "NNP"]),
    ]


def test_docstart_lines_are_skipped_and_end_a_sentence(tmp_path):
    # The second -DOCSTART- has no blank line around it: it still ends the sentence before.
    text = "-DOCSTART- O\n\nEU B-ORG\n-DOCSTART- O\nPeter B-PER\n\n-DOCSTART-\n"
    path = write(tmp_path, text)
    assert sentences(path) == [(["EU"], ["B-ORG"]), (["Peter"], ["B-PER"])]
    assert read(path)[0].numbers == [3, 5]


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, TWO_SENTENCES.replace("\n", "\r\n"))
    assert sentences(path) == EXPECTED
    assert read(path)[0].numbers == [1, 5]


def test_a_last_sentence_without_a_trailing_newline(tmp_path):
    path = write(tmp_path, TWO_SENTENCES.removesuffix("\n"))
    assert sentences(path) == EXPECTED


def test_several_blank_and_whitespace_only_lines_in_a_row(tmp_path):
    text = "\n\n  \nEU\tB-ORG\n\n \t\n\r\n\n\nPeter B-PER\n\n\n"
    path = write(tmp_path, text)
    assert sentences(path) == [(["EU"], ["B-ORG"]), (["Peter"], ["B-PER"])]
    assert read(path)[0].numbers == [4, 10]


def test_a_no_break_space_inside_a_word_does_not_split_it(tmp_path):
    path = write(tmp_path, "New\u00a0York\tB-LOC\n東京\u3000都 B-LOC\n")
    assert sentences(path) == [(["New\u00a0York", "東京\u3000都"], ["B-LOC", "B-LOC"])]


def test_gzip_compressed_input(tmp_path):
    path = write(tmp_path, TWO_SENTENCES, "train.conll.gz")
    assert sentences(path) == EXPECTED
    txt = write(tmp_path, TWO_SENTENCES, "train.txt.gz")
    assert sentences(txt) == EXPECTED


def test_line_numbers_are_those_of_each_sentences_first_word(tmp_path):
    path = write(tmp_path, FOUR_COLUMNS)
    (table,) = read(path)
    assert table.numbers == [3, 6]
    assert table.locations == ["line 3", "line 6"]


def test_a_word_without_a_tag_keeps_its_sentence_with_an_error_naming_the_line(tmp_path):
    text = "EU B-ORG\n\nPeter B-PER\nBlackburn\nsaid O\n\nThe O\n"
    path = write(tmp_path, text)
    (table,) = read(path)
    assert table.numbers == [1, 3, 7]
    assert table.errors[0] is None and table.errors[2] is None
    assert "line 4 has 1 field(s)" in table.errors[1]
    assert table.columns["tokens"][1] == ["Peter", "Blackburn", "said"]
    assert table.columns["tags"][1] == ["B-PER", "O"]


def test_a_tag_column_beyond_the_fields_is_a_row_error(tmp_path):
    path = write(tmp_path, "EU NNP B-ORG\n\nPeter NNP\n")
    (table,) = read(path, tag_column=2)
    assert table.errors[0] is None
    assert table.errors[1] == (
        "line 3 has 2 field(s), but the tag is field 2 (data.tag_column, 0-based, the word being "
        "field 0)"
    )


def test_an_empty_input_yields_one_empty_table(tmp_path):
    for text in ("", "\n\n", "-DOCSTART- O\n\n"):
        (table,) = read(write(tmp_path, text))
        assert len(table) == 0
        assert table.columns == {"tokens": [], "tags": []}


def test_batches_hold_at_most_batch_rows_sentences(tmp_path, monkeypatch):
    monkeypatch.setattr(parse, "BATCH_ROWS", 2)
    text = "".join(f"w{i} O\n\n" for i in range(5))
    tables = read(write(tmp_path, text))
    assert [len(t) for t in tables] == [2, 2, 1]
    assert [t.start for t in tables] == [0, 2, 4]
    assert [t.numbers for t in tables] == [[1, 3], [5, 7], [9]]


def test_the_digest_is_the_sha256_of_the_bytes(tmp_path):
    data = FOUR_COLUMNS.replace("\n", "\r\n").encode()
    path = write(tmp_path, data)
    stream = Stream(str(path), config_for(path))
    list(stream.batches())
    assert stream.digest == hashlib.sha256(data).hexdigest()


def test_binary_input_is_refused(tmp_path):
    path = write(tmp_path, b"EU\x00B-ORG\n")
    with pytest.raises(DataError, match=r"looks binary, not CoNLL text"):
        read(path)


def test_txt_without_token_classification_still_needs_a_format(tmp_path):
    path = write(tmp_path, TWO_SENTENCES, "train.txt")
    config = DataConfig(train=str(path), task="sequence-classification")
    with pytest.raises(DataError, match=r"set data.format.*conll"):
        list(Stream(str(path), config).batches())


def test_format_conll_reads_any_extension(tmp_path):
    path = write(tmp_path, TWO_SENTENCES, "eng.train")
    assert sentences(path, format="conll") == EXPECTED


@pytest.mark.skipif(
    not CONLL2003_TRAIN.exists(), reason=f"CoNLL-2003 train split not found at {CONLL2003_TRAIN}"
)
def test_conll2003_train_reads_every_sentence():
    began = time.perf_counter()
    tables = read(CONLL2003_TRAIN)
    seconds = time.perf_counter() - began
    tokens = [t for table in tables for t in table.columns["tokens"]]
    tags = [t for table in tables for t in table.columns["tags"]]
    assert all(error is None for table in tables for error in table.errors)
    assert len(tokens) == 14_041
    assert sum(map(len, tokens)) == 203_621
    assert [len(t) for t in tokens] == [len(t) for t in tags]
    print(f"read {CONLL2003_TRAIN} in {seconds:.2f}s")
