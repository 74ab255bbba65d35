"""Alpaca rows for causal LMs: the standard prompt, the output-only mask, row checks, config."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.fingerprint import fingerprint, prep_identity
from ftpipe.data.prepared import PrepDir, load_prepared
from ftpipe.errors import ConfigError, DataError
from ftpipe.tasks import get_task
from ftpipe.train.batching import BatchSource
from tests.helpers import prep_lm_rows, save_decoder_tokenizer, write_csv, write_jsonl

HEAD = "Below is an instruction that describes a task"
WITH_INPUT = (
    f"{HEAD}, paired with an input that provides further context. Write a response that "
    "appropriately completes the request.\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n"
    "### Response:\n"
)
WITHOUT_INPUT = (
    f"{HEAD}. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{}\n\n### Response:\n"
)
WORDS = [*f"{WITH_INPUT} {WITHOUT_INPUT}".replace("{}", "").split(), "greet", "bob", "is",
         "here", "hello", "hi", "there", "me", "you", "thank", "them"]  # fmt: skip
ROWS = [
    ({"instruction": "greet bob", "input": "bob is here", "output": "hello bob"},
     WITH_INPUT.format("greet bob", "bob is here")),
    ({"instruction": "greet", "output": "hello"}, WITHOUT_INPUT.format("greet")),
    ({"instruction": "greet me", "input": "", "output": "hi"}, WITHOUT_INPUT.format("greet me")),
    ({"instruction": "greet you", "input": "  ", "output": "hi there"},
     WITHOUT_INPUT.format("greet you")),
]  # fmt: skip
"""Rows with an input, without the key, with an empty and a blank one; and their prompts."""


@pytest.fixture
def lm_dir(tmp_path):
    directory = tmp_path / "lm"
    return directory, save_decoder_tokenizer(directory, WORDS)


def alpaca_config(tmp_path, model_dir, train: str, **data):
    return validate_config({
        "data": {"train": train, "task": "causal-lm", "instruction_column": "instruction",
                 "eval_fraction": 0.25, "duplicates": "keep", "max_length": 96,
                 "output_dir": str(tmp_path / "prep"), **data},
        "model": {"name": str(model_dir)},
    })  # fmt: skip


def stored(config) -> tuple[list[str], list[str], object]:
    """Every prepared row's stored prompt and completion (train, then eval), and their split."""
    prep = PrepDir.open(config.data.output_dir)
    tables = [pq.read_table(prep.split_path(name)) for name in ("train", "eval")]
    data = load_prepared(config.data.output_dir)
    split = data.splits["train"].concat(data.splits["eval"])
    texts = [t for table in tables for t in table.column("text").to_pylist()]
    return texts, [c for table in tables for c in table.column("text_pair").to_pylist()], split


def test_alpaca_rows_render_the_standard_prompt_and_train_only_the_output_and_eos(tmp_path, lm_dir):
    from transformers import AutoTokenizer

    model_dir, vocab = lm_dir
    train = str(write_jsonl(tmp_path / "a.jsonl", [row for row, _ in ROWS]))
    config = alpaca_config(tmp_path, model_dir, train)
    assert config.data.completion_column == "output"
    run_prep(config)
    texts, outputs, split = stored(config)
    expected = {row["output"]: prompt for row, prompt in ROWS}
    assert sorted(zip(outputs, texts, strict=True)) == sorted(expected.items())

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.unk_token_id not in {i for ids in split.input_ids for i in ids}
    batch = BatchSource(split, vocab["<pad>"], get_task("causal-lm")).batch(
        np.arange(len(split)), torch.device("cpu")
    )
    for j, (ids, prompt, output) in enumerate(zip(split.input_ids, texts, outputs, strict=True)):
        length = int(split.prompt_lengths[j])
        assert ids[:length] == tokenizer(prompt)["input_ids"]  # <s> and the prompt's words
        target = tokenizer(output, add_special_tokens=False)["input_ids"] + [vocab["</s>"]]
        assert batch["labels"][j, : len(ids)].tolist() == [-100] * length + target


def test_csv_rows_name_their_columns_and_may_have_no_input_column(tmp_path, lm_dir):
    model_dir, _ = lm_dir
    rows = [["greet bob", "hello bob"], ["greet", "hello"], ["greet me", "hi"], ["greet you", "hi"]]
    train = str(write_csv(tmp_path / "a.csv", rows, header=("task", "answer")))
    config = alpaca_config(tmp_path, model_dir, train, instruction_column="task",
                           completion_column="answer")  # fmt: skip
    run_prep(config)
    texts, outputs, _ = stored(config)
    assert sorted(zip(outputs, texts, strict=True)) == sorted(
        (answer, WITHOUT_INPUT.format(task)) for task, answer in rows
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"instruction": " ", "output": "hi"},
         "the instruction in column 'instruction' is empty"),
        ({"output": "hi"}, "the instruction in column 'instruction' is missing"),
        ({"instruction": "greet", "output": ""}, "the output in column 'output' is empty"),
        ({"instruction": "greet", "input": "bob"}, "the output in column 'output' is missing"),
        ({"instruction": 3, "output": "hi"},
         "the instruction in column 'instruction' is an int, not text"),
        ({"instruction": "greet", "input": ["bob"], "output": "hi"},
         "the input in column 'input' is a list, not text"),
        ({"instruction": "greet", "output": {"text": "hi"}},
         "the output in column 'output' is a dict, not text"),
    ],
    ids=["empty-instruction", "no-instruction", "empty-output", "no-output", "number",
         "list-input", "object-output"],
)  # fmt: skip
def test_a_bad_alpaca_row_is_refused_naming_the_file_and_the_line(tmp_path, lm_dir, row, reason):
    model_dir, _ = lm_dir
    rows = [row for row, _ in ROWS]
    rows.insert(2, row)
    train = str(write_jsonl(tmp_path / "a.jsonl", rows))
    with pytest.raises(DataError, match=r"a\.jsonl has 1 invalid row .*: line 3: ") as error:
        run_prep(alpaca_config(tmp_path, model_dir, train))
    assert f"line 3: {reason}" in str(error.value)


def test_a_bad_alpaca_row_exits_2_from_the_command_line(tmp_path, lm_dir):
    model_dir, _ = lm_dir
    rows = [row for row, _ in ROWS]
    rows.insert(3, {"instruction": "greet", "output": " "})
    result = prep_lm_rows(tmp_path, model_dir, rows, "a.jsonl", instruction_column="instruction")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # the terminal wraps long lines
    assert "a.jsonl has 1 invalid row" in message
    assert "line 4: the output in column 'output' is empty" in message
    assert not (tmp_path / "prep").exists()


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        ({"instruction_column": "instruction"},
         r"data\.instruction_column is for language-model rows, and "
         r"data\.task=sequence-classification has none"),
        ({"instruction_column": "instruction", "task": "causal-lm", "messages_column": "chat"},
         r"data\.instruction_column reads Alpaca rows .* and data\.messages_column conversations"),
        ({"instruction_column": 0, "task": "causal-lm", "has_header": False,
          "completion_column": 1},
         r"data\.input_column is 'input', but data\.has_header is false"),
    ],
    ids=["not-causal-lm", "with-conversations", "no-header-input-by-name"],
)  # fmt: skip
def test_alpaca_settings_that_cannot_work_are_refused(data, refusal):
    with pytest.raises(ConfigError, match=refusal):
        validate_config({"data": {"train": "x.jsonl", **data}})


def test_the_fingerprint_covers_the_alpaca_keys_only_when_set(tmp_path, lm_dir):
    model_dir, _ = lm_dir

    def identity(**data):
        config = validate_config({"data": {"train": "x.jsonl", "task": "causal-lm", **data},
                                  "model": {"name": str(model_dir)}})  # fmt: skip
        return prep_identity(config, {"train": "0" * 64}, "tokenizer")

    plain = identity()["data"]
    assert not {"instruction_column", "input_column", "train_on", "packing"} & set(plain)
    alpaca = identity(instruction_column="instruction", input_column="context")["data"]
    assert (alpaca["instruction_column"], alpaca["input_column"]) == ("instruction", "context")
    assert fingerprint(identity(packing=True)) == fingerprint(identity())  # batching only
    assert fingerprint(identity(text_column="t", completion_column="c", train_on="all")) != (
        fingerprint(identity(text_column="t", completion_column="c"))
    )
