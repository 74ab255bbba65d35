"""Batched inference from an export, tokenized exactly as prep tokenized for training.

The export's tokenizer, `data.max_length` from its config, longest-first truncation and the
padding training used (`ftpipe.tasks.pad_rows`), so an export scores here what it scored in
training. Probabilities apply the export's temperature (softmax(logits / T)). The task says
what a row's prediction is. Causal LMs generate instead (`ftpipe.train.generation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftpipe.config.generation import GenerateConfig
from ftpipe.errors import FtpipeError
from ftpipe.tasks import ServingTask, pad_rows
from ftpipe.tasks.calibration import softmax
from ftpipe.tasks.token_serving import TaggedText, joined, split_words
from ftpipe.train.export import Export, load_export
from ftpipe.train.generation import Generator


@dataclass
class Predictor:
    """A loaded export that serves its task, ready for batched inference."""

    model: Any
    tokenizer: Any
    task: ServingTask
    names: tuple[str, ...]
    max_length: int
    pad_id: int
    pairs: bool
    export: Export
    batch_size: int = 64
    generation: GenerateConfig | None = None
    generate_rows: int = 0

    @property
    def directory(self) -> Path:
        """The export directory."""
        return self.export.directory

    @property
    def manifest(self) -> dict[str, Any]:
        """The export's manifest."""
        return self.export.manifest

    @property
    def temperature(self) -> float:
        """The export's temperature: probabilities are softmax(logits / temperature)."""
        return self.export.temperature

    @classmethod
    def load(
        cls,
        directory: str | Path,
        batch_size: int = 64,
        what: str = "predict",
        generation: GenerateConfig | None = None,
        generate_rows: int = 0,
    ) -> Predictor:
        """Load an export directory (any kind: transformers, peft, pooled-classifier).

        Args:
            directory: The export directory.
            batch_size: Rows per forward pass.
            what: The stage loading it, for messages.
            generation: How a causal LM generates; None: as its training config says.
            generate_rows: Held-out rows a causal LM answers in `outputs` (evaluation).

        Raises:
            FtpipeError: If the directory is not an export, or its task cannot be served.
        """
        export = Export.open(directory)
        task = export.task.serving(what)
        model, tokenizer = load_export(export)
        model_config = getattr(model, "config", None) or model.backbone.config
        data = export.config.data
        return cls(
            model=model,
            tokenizer=tokenizer,
            task=task,
            names=export.labels.names if export.labels is not None else (),
            max_length=data.max_length,
            pad_id=_pad_id(model_config, tokenizer),
            pairs=getattr(data, task.second_text_key) is not None,
            export=export,
            batch_size=batch_size,
            generation=generation,
            generate_rows=generate_rows,
        )

    def probabilities(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities [rows, classes]: softmax(logits / temperature), float32."""
        return softmax(self.logits(texts, pairs), self.temperature).astype(np.float32)

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """The model's logits [rows, classes] for texts (and second texts for pair models).

        Rows are batched by length, so padding stays short, and returned in input order.
        """
        import torch

        from ftpipe.train.export import predict_logits

        if self.pairs and pairs is None:
            raise FtpipeError(
                "This model classifies text pairs: give the second text too (--text-pair, or a "
                "pair column with --pair-column)."
            )
        encoded = self.tokenizer(
            list(texts),
            list(pairs) if self.pairs and pairs is not None else None,
            truncation="longest_first",
            max_length=self.max_length,
            return_token_type_ids=self.pairs,
        )
        ids = encoded["input_ids"]
        order = np.argsort([len(row) for row in ids], kind="stable")
        out = np.empty((len(ids), len(self.names)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            input_ids, mask = pad_rows([ids[i] for i in rows], self.pad_id)
            batch = {"input_ids": input_ids, "attention_mask": mask}
            if self.pairs:
                batch["token_type_ids"] = pad_rows([encoded["token_type_ids"][i] for i in rows], 0)[
                    0
                ]
            with torch.inference_mode():
                out[rows] = predict_logits(self.model, batch).numpy()
        return out

    def frame(self, probabilities: np.ndarray) -> pd.DataFrame:
        """What the task returns per row (e.g. `label` plus a `prob_<label>` per class)."""
        return self.task.predictions(probabilities, self.names)

    def outputs(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Any:
        """What the task scores: raw logits per row, or for tagged words, each text's words.

        Held-out texts of tagged words are their words joined by single spaces, so they are
        split on spaces; `predict` splits free text into words itself. A causal LM's are its
        held-out loss per row and its answers to the first `generate_rows` prompts.
        """
        if self.task.generates:
            return self.generator.heldout(list(texts), list(pairs) if pairs else None,
                                          self.generate_rows)  # fmt: skip
        if self.task.pretokenized:
            return self.tag([text.split(" ") for text in texts])
        return self.logits(texts, pairs)

    def predict(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        words: Sequence[Sequence[str]] | None = None,
    ) -> pd.DataFrame:
        """What the task returns per input: a label and probabilities, or entities and tags.

        Args:
            texts: The texts (ignored when `words` is given); a causal LM's prompts.
            pairs: Second texts, for pair models.
            words: Pre-tokenized inputs, for models that tag words; a causal LM's
                conversations (lists of messages).
        """
        if self.task.generates:
            prompts = list(words) if words is not None else list(texts)
            return self.task.predictions(self.generator.ask(prompts), self.names)
        if not self.task.pretokenized:
            return self.frame(self.probabilities(texts, pairs))
        if words is not None:
            return self.task.predictions(self.tag([list(w) for w in words]), self.names)
        return self.task.predictions(self.tag_text(texts), self.names)

    def tag_text(self, texts: Sequence[str]) -> list[TaggedText]:
        """Free texts cut into words (`ftpipe.tasks.token_serving.split_words`), then tagged."""
        offsets = [split_words(text) for text in texts]
        words = [[text[a:b] for a, b in spans] for text, spans in zip(texts, offsets, strict=True)]
        probabilities = self.word_probabilities(words)
        return [TaggedText(t, o, p) for t, o, p in zip(texts, offsets, probabilities, strict=True)]

    def tag(self, sentences: Sequence[list[str]]) -> list[TaggedText]:
        """Pre-tokenized sentences tagged; offsets point into the words joined by spaces."""
        probabilities = self.word_probabilities(sentences)
        return [
            TaggedText(*joined(words), p) for words, p in zip(sentences, probabilities, strict=True)
        ]

    def word_probabilities(self, sentences: Sequence[list[str]]) -> list[np.ndarray]:
        """Per sentence, [words, tags] probabilities read on each word's first sub-word.

        Sentences are cut into rows exactly as prep cut them (`ftpipe.data.words`, the
        export's `data.max_length` and `data.stride`), so each word is read in one window.
        """
        import torch

        from ftpipe.data.words import tokenize_words
        from ftpipe.train.export import predict_logits

        data = self.export.config.data
        rows = tokenize_words(
            self.word_tokenizer, list(sentences), [[0] * len(s) for s in sentences],
            self.max_length, data.stride,
        )  # fmt: skip
        out = [np.zeros((len(words), len(self.names)), np.float32) for words in sentences]
        ids = rows.tokens.input_ids
        order = np.argsort([len(row) for row in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch_rows = order[start : start + self.batch_size]
            input_ids, mask = pad_rows([ids[i] for i in batch_rows], self.pad_id)
            with torch.inference_mode():
                logits = predict_logits(
                    self.model, {"input_ids": input_ids, "attention_mask": mask}
                )
            probabilities = softmax(logits.numpy(), self.temperature)
            for j, row in enumerate(batch_rows.tolist()):
                word_ids = np.asarray(rows.word_ids[row])
                positions = np.flatnonzero(word_ids >= 0)
                out[rows.sentence_of[row]][word_ids[positions]] = probabilities[j, positions]
        return out

    @cached_property
    def generator(self) -> Generator:
        """The causal LM behind this export, ready to generate."""
        export = self.export
        return Generator(
            self.model, self.tokenizer, export.directory, export.config,
            self.generation or export.config.generate, export.task, self.pad_id, self.batch_size,
        )  # fmt: skip

    @cached_property
    def word_tokenizer(self) -> Any:
        """The export tokenizer's Rust backend, without truncation or padding (as prep's)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer


def _pad_id(model_config: Any, tokenizer: Any) -> int:
    """The model's padding id, else the tokenizer's, else 0 (padding is masked out anyway)."""
    for source in (model_config, tokenizer):
        if (pad := getattr(source, "pad_token_id", None)) is not None:
            return int(pad)
    return 0
