"""The data section of the config: where the data is, how prep reads, checks and splits it.

Each field's docstring is its help text (`ftpipe config schema`, error messages).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ftpipe.config.base import Column, LabelNames, Section


class DataConfig(Section):
    """Where the labelled data is, how to read and validate it, and where prep writes."""

    train: str
    """Training data: a local path, an fsspec URI (file://, s3://, gs://), or `hf:NAME:SPLIT`
    for a Hugging Face dataset. Formats: .csv, .tsv, .jsonl, .parquet."""

    eval: str | None = None
    """Held-out data in the same forms as `train`, on which the sweep picks its best trial and
    training its best checkpoint. Null splits it from train (stratified, seeded by `seed`)."""

    test: str | None = None
    """Test data in the same forms as `train`: `evaluate` scores it and the promotion gate
    decides on it; tune and train never read it. Null with `test_fraction` above 0 splits it
    from train; null with `test_fraction` 0 holds out none, and the gate then decides on eval,
    whose interval is optimistic because eval also selected the model."""

    task: Literal["sequence-classification", "token-classification", "causal-lm"] = (
        "sequence-classification"
    )
    """The task (`ftpipe.tasks`). `sequence-classification` (earlier name: `classification`):
    text (or text pairs) with a label. `token-classification`: named entities, a list of words
    with one tag each (columns `tokens` and `tags` unless `text_column` / `label_column` say
    otherwise). `causal-lm`: language-model fine-tuning on text, or on prompt + completion
    (`completion_column`) with the loss on the completion only; no labels."""

    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = "auto"
    """File format; `auto` picks it from the file extension (.conll, .iob and .bio are CoNLL,
    and so is .txt with `task: token-classification`)."""

    tag_column: int | None = Field(default=None, ge=1)
    """CoNLL files: the 0-based field of each line that holds the tag (the word is field 0);
    null takes the last field, as in `word POS chunk tag` lines."""

    repair_spans: bool = True
    """Token classification: an `I-X` that follows `O` or another type is repaired to `B-X`,
    counted and warned about; false refuses the file, naming the line."""

    stride: int | None = Field(default=16, ge=0)
    """Token classification: a sentence longer than `max_length` sub-words is split into
    windows, each sharing this many sub-words of context with the one before, so every word is
    trained on and scored once; null truncates such sentences instead (counted in stats)."""

    label_all_subwords: bool = False
    """Token classification: train every sub-word of a word on its tag, not only the first
    (the others get -100). Predictions still read the first sub-word."""

    has_header: bool = True
    """Whether CSV/TSV files start with a header line. Without one, columns are 0-based
    indexes."""

    text_column: Column = "text"
    """Column holding the text: a name, or a 0-based index when `has_header` is false."""

    text_pair_column: Column | None = None
    """Optional column holding a second text, for sentence-pair tasks."""

    label_column: Column = "label"
    """Column holding the label: a string or an integer per row (classification)."""

    completion_column: Column | None = None
    """For `task: causal-lm`: a column holding each row's completion; `text_column` is then the
    prompt, and the loss covers the completion only."""

    messages_column: Column | None = None
    """For `task: causal-lm`: a column holding each row's conversation, a list of messages
    with a `role` (system, user, assistant) and a `content` (ShareGPT's `from` and `value`,
    with human and gpt, read too). It is read in place of `text_column`, and the loss covers
    the assistant turns only."""

    chat_template: str = "auto"
    """For `messages_column`: how a conversation becomes text. `auto` is the tokenizer's own
    chat template; `chatml`, `llama3` and `plain` are shipped with ftpipe; or a `.jinja` file."""

    instruction_column: Column | None = None
    """For `task: causal-lm`: Alpaca-style rows. This column holds the instruction,
    `input_column` the optional input, and `completion_column` (default `output`) the answer;
    the prompt renders as Alpaca's `### Instruction:` / `### Input:` / `### Response:`."""

    input_column: Column = "input"
    """For `instruction_column`: the column with each row's optional input (missing or empty
    cells render the prompt without an input section)."""

    train_on: Literal["auto", "completion", "assistant", "all"] = "auto"
    """For `task: causal-lm`: which tokens the loss covers. `completion`: a prompt +
    completion (or Alpaca) row's completion and its EOS; `assistant`: a conversation's
    assistant turns, each through its EOS; `all`: every token; `auto` is `assistant` for
    conversations, `completion` for rows with a completion, and `all` for plain text."""

    packing: bool = False
    """For `task: causal-lm`: pack rows into sequences of up to `max_length` tokens, with
    position ids restarting at each row and attention kept inside each row, so less compute
    goes to padding; the loss is the same as over the rows unpacked."""

    labels: LabelNames | None = None
    """Declared label set, in id order (strings or integers). Rows with other labels are
    invalid. Null infers the set from the training data (integers sort numerically, strings
    alphabetically)."""

    hf_config: str | None = None
    """Configuration (subset) name for a `hf:` dataset, for example `sst2` for GLUE."""

    max_length: int = Field(default=128, ge=8, le=8192)
    """Maximum tokens per example, special tokens included; longer examples are truncated."""

    eval_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Share of each class held out for evaluation when `eval` is null."""

    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of each class held out as the test split when `test` is null (stratified, seeded
    by `seed`, taken before eval, so it stays the same when `eval_fraction` changes); 0 holds
    out none."""

    max_train_rows: int | None = Field(default=None, ge=2)
    """Keep about this many training rows, a stratified seeded sample taken after the eval
    split (quick runs and CPU benchmarks); null keeps them all."""

    max_eval_rows: int | None = Field(default=None, ge=2)
    """Keep about this many eval rows, stratified and seeded (cheaper evaluation in sweeps and
    benchmarks); null keeps them all."""

    on_error: Literal["fail", "drop"] = "fail"
    """What to do with invalid rows (empty text, missing or unknown label, bad UTF-8, oversize,
    conflicting labels, train/eval leakage): `fail` stops and names the rows; `drop` removes
    them and reports the counts."""

    duplicates: Literal["drop", "keep", "fail"] = "drop"
    """Exact duplicate rows (same text, same label): `drop` keeps the first and warns."""

    max_chars: int = Field(default=20_000, ge=1)
    """Rows whose text (plus pair) is longer than this many characters are invalid."""

    shard_rows: int = Field(default=50_000, ge=1)
    """Rows per Parquet shard in the prep output."""

    min_rows_per_class: int = Field(default=5, ge=1)
    """Prep warns about a class with fewer training rows than this, or with no eval rows; it
    changes no output, only the warnings."""

    output_dir: str = "outputs/prep"
    """Directory prep writes to: train/, eval/ (and test/) shards, label_map.json, stats.json
    and fingerprint.json. Prep replaces it whole once the new outputs are complete, and refuses a
    directory it did not write."""

    @field_validator("task", mode="before")
    @classmethod
    def _earlier_task_name(cls, value: Any) -> Any:
        return "sequence-classification" if value == "classification" else value

    @model_validator(mode="before")
    @classmethod
    def _token_columns(cls, values: Any) -> Any:
        """The columns a task reads by default, and a conversation's as the text.

        Token classification reads `tokens` and `tags` unless the columns are named.
        """
        if isinstance(values, dict) and values.get("task") == "token-classification":
            values = {"text_column": "tokens", "label_column": "tags", **values}
        if isinstance(values, dict) and values.get("messages_column") is not None:
            values = {**values, "text_column": values["messages_column"]}
        if isinstance(values, dict) and values.get("instruction_column") is not None:
            # Alpaca rows: the instruction is the text (the prompt renders from it and the
            # input), the output the completion.
            text = values["instruction_column"]
            values = {"completion_column": "output", **values, "text_column": text}
        return values

    @model_validator(mode="after")
    def _one_test_split(self) -> DataConfig:
        if self.test is not None and self.test_fraction > 0:
            raise ValueError(
                f"data.test ({self.test}) and data.test_fraction ({self.test_fraction}) both "
                "ask for a test split: a file, and a share of train. Keep one: set "
                "data.test_fraction=0 to test on the file, or data.test=null to split the test "
                "set off train"
            )
        if self.eval is None and self.test is None and self.eval_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.eval_fraction ({self.eval_fraction}) plus data.test_fraction "
                f"({self.test_fraction}) hold out all of train, leaving nothing to train on; "
                "lower them so that their sum is below 1"
            )
        return self

    @model_validator(mode="after")
    def _language_model_rows(self) -> DataConfig:
        """Refuse language-model settings that cannot apply to these rows."""
        lm, chat = self.task == "causal-lm", self.messages_column is not None
        defaults = {"instruction_column": None, "train_on": "auto", "packing": False}
        set_keys = [f"data.{key}" for key, off in defaults.items() if getattr(self, key) != off]
        if set_keys and not lm:
            raise ValueError(
                f"{' and '.join(set_keys)} {'is' if len(set_keys) == 1 else 'are'} for "
                f"language-model rows, and data.task={self.task} has none: remove "
                f"{'it' if len(set_keys) == 1 else 'them'} or set data.task=causal-lm"
            )
        if self.instruction_column is not None and chat:
            raise ValueError(
                "data.instruction_column reads Alpaca rows (instruction, input, output) and "
                "data.messages_column conversations: keep the one your rows hold"
            )
        if self.train_on == "assistant" and not chat:
            raise ValueError(
                "data.train_on=assistant trains a conversation's assistant turns, and these rows "
                "are not conversations (data.messages_column is unset): use completion, all "
                "or auto"
            )
        if self.train_on == "completion" and self.completion_column is None:
            rows, fix = ("conversations, whose answers are assistant turns", "assistant, all")
            if not chat:
                rows, fix = "plain text, with no completion column", "all"
            raise ValueError(
                f"data.train_on=completion trains each row's completion, and these rows are "
                f"{rows}: use {fix} or auto"
            )
        return self

    @model_validator(mode="after")
    def _columns_match_header(self) -> DataConfig:
        lm, chat = self.task == "causal-lm", self.messages_column is not None
        if lm and self.text_pair_column is not None:
            raise ValueError(
                "data.text_pair_column is for classification; with data.task=causal-lm use "
                "data.completion_column for prompt + completion rows"
            )
        if lm and self.labels is not None:
            raise ValueError(
                "data.labels declares classes, but data.task=causal-lm has no labels; remove "
                "data.labels or set data.task=sequence-classification"
            )
        if not lm and self.completion_column is not None:
            raise ValueError(
                "data.completion_column needs data.task=causal-lm; for sentence pairs use "
                "data.text_pair_column"
            )
        if chat and (not lm or self.completion_column is not None):
            raise ValueError(
                "data.messages_column holds conversations for data.task=causal-lm, without "
                "data.completion_column (a conversation's assistant turns are its completions)"
            )
        if not chat and self.chat_template != "auto":
            raise ValueError(
                f"data.chat_template={self.chat_template} renders conversations: set "
                "data.messages_column to the column that holds them"
            )
        alpaca = self.instruction_column is not None
        columns = {
            "instruction_column" if alpaca else "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": None if lm else self.label_column,
            "completion_column": self.completion_column,
            "input_column": self.input_column if alpaca else None,
        }
        for key, value in columns.items():
            if value is None:
                continue
            if not self.has_header and not isinstance(value, int):
                raise ValueError(
                    f"data.{key} is {value!r}, but data.has_header is false: give a 0-based "
                    "column index, or set data.has_header=true"
                )
            if isinstance(value, int) and value < 0:
                raise ValueError(f"data.{key} must be a 0-based column index, got {value}")
        return self
