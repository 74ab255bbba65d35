"""Tagged words to model rows: label alignment by hand-worked example, windows, truncation."""

from __future__ import annotations

import pytest

from ftpipe.data.tokenize import load_tokenizer
from ftpipe.data.words import tokenize_words
from ftpipe.errors import DataError

# The tiny tokenizer splits "crashings" into 3 pieces: crash ##ing ##s.
WORDS = ["My", "card", "crashings", "twice"]
TAGS = [0, 1, 2, 0]  # O B-X I-X O
CLS, SEP = 2, 3
IDS = [7, 13, 23, 28, 26, 16]  # my card crash ##ing ##s twice


@pytest.fixture
def tokenizer(make_config):
    return load_tokenizer(make_config(train="unused").model)


def test_the_tag_goes_on_the_first_piece_and_minus_100_on_the_others_and_the_specials(
    tokenizer,
):
    rows = tokenize_words(tokenizer, [WORDS], [TAGS], max_length=16, stride=16)
    assert rows.tokens.input_ids == [[CLS, *IDS, SEP]]
    assert rows.token_labels == [[-100, 0, 1, 2, -100, -100, 0, -100]]
    assert rows.word_ids == [[-1, 0, 1, 2, -1, -1, 3, -1]]
    assert rows.sentence_of.tolist() == [0]
    assert (rows.tokens.pieces, rows.tokens.words, rows.tokens.windows) == (6, 4, 0)


def test_label_all_subwords_labels_every_piece_but_scores_the_first(tokenizer):
    rows = tokenize_words(tokenizer, [WORDS], [TAGS], 16, 16, label_all_subwords=True)
    assert rows.token_labels == [[-100, 0, 1, 2, 2, 2, 0, -100]]
    assert rows.word_ids == [[-1, 0, 1, 2, -1, -1, 3, -1]]


def test_a_long_sentence_is_split_into_windows_that_score_each_word_once(tokenizer):
    # max_length 6 leaves 4 pieces per window; stride 2 starts the second window 2 pieces
    # before the first one ends, so "crash ##ing" is context there, already labelled before.
    rows = tokenize_words(tokenizer, [WORDS, ["twice"]], [TAGS, [0]], max_length=6, stride=2)
    assert rows.tokens.input_ids == [
        [CLS, 7, 13, 23, 28, SEP],
        [CLS, 23, 28, 26, 16, SEP],
        [CLS, 16, SEP],
    ]
    assert rows.token_labels == [
        [-100, 0, 1, 2, -100, -100],
        [-100, -100, -100, -100, 0, -100],
        [-100, 0, -100],
    ]
    assert rows.word_ids == [[-1, 0, 1, 2, -1, -1], [-1, -1, -1, -1, 3, -1], [-1, 0, -1]]
    assert rows.sentence_of.tolist() == [0, 0, 1]
    scored = sorted(w for row in rows.word_ids[:2] for w in row if w >= 0)
    assert scored == [0, 1, 2, 3]
    assert rows.tokens.windows == 1
    assert rows.tokens.lengths.tolist() == [8, 3]  # untruncated, for stats


def test_without_a_stride_a_long_sentence_is_truncated_and_its_lost_words_counted(tokenizer):
    rows = tokenize_words(tokenizer, [WORDS], [TAGS], max_length=6, stride=None)
    assert rows.tokens.input_ids == [[CLS, 7, 13, 23, 28, SEP]]
    assert rows.word_ids == [[-1, 0, 1, 2, -1, -1]]
    assert rows.tokens.lost_words == 1  # "twice"; "crashings" keeps its first piece


def test_a_stride_as_wide_as_the_window_is_refused_naming_the_keys(tokenizer):
    with pytest.raises(DataError, match=r"data\.stride=4 .*data\.max_length=6"):
        tokenize_words(tokenizer, [WORDS], [TAGS], max_length=6, stride=4)
