"""A causal-LM export serving prompts: encoded as training encoded them, then generated.

Prompts are encoded as prep encoded a row's prompt: prompt text with the tokenizer's special
tokens (a BOS for Llama-style tokenizers), or a conversation rendered with the run's chat
template up to the assistant's turn (the generation prompt). A prompt longer than
`data.max_length` loses text from the left, its leading special tokens kept, as in training.
Prompts are left-padded into batches of similar length, and the answer is the new tokens up to
EOS, decoded without special tokens. Generation is seeded by the run's `seed`, so sampling
repeats too.

The held-out loss re-tokenizes each row with prep's own code (`ftpipe.data.shards.encode_rows`)
and the task's targets, so it is over exactly the tokens training scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftpipe.config.generation import GenerateConfig
from ftpipe.config.schema import Config, ModelConfig
from ftpipe.data.chats import ChatRenderer
from ftpipe.data.completions import end_of_text_id, split_specials
from ftpipe.data.prepared import Split, batches
from ftpipe.data.shards import encode_rows
from ftpipe.errors import FtpipeError
from ftpipe.tasks import Task
from ftpipe.tasks.alpaca import render_prompt
from ftpipe.tasks.causal_lm import token_losses
from ftpipe.tasks.lm_serving import LMOutputs, prompted

Prompt = str | list[dict[str, str]]
"""What the model is asked: prompt text, or a conversation's messages so far."""


@dataclass
class Generator:
    """A loaded causal-LM export with its tokenizer and generation settings.

    Attributes:
        model: The model, in eval mode.
        tokenizer: The export's tokenizer (transformers, fast).
        directory: The export directory (its tokenizer files render conversations).
        config: The config the model was trained with.
        settings: Generation settings (by default the training config's `generate`).
        task: The export's task.
        pad_id: The padding token id.
        batch_size: Rows per forward pass when scoring the held-out loss.
    """

    model: Any
    tokenizer: Any
    directory: Path
    config: Config
    settings: GenerateConfig
    task: Task
    pad_id: int
    batch_size: int = 64

    @cached_property
    def backend(self) -> Any:
        """The tokenizer's Rust backend, without truncation or padding (as prep's)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @cached_property
    def renderer(self) -> ChatRenderer | None:
        """Renders conversations, for models tuned on them; None otherwise."""
        data = self.config.data
        if data.messages_column is None:
            return None
        # The export's tokenizer carries the template training rendered with (`write_export`).
        own = data.model_copy(update={"chat_template": "auto"})
        return ChatRenderer(ModelConfig(name=str(self.directory)), own)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """A prompt's token ids, as training encoded prompts, at most `data.max_length`.

        Raises:
            FtpipeError: If a conversation is given to a model tuned on prompt text.
        """
        if self.renderer is not None:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            ids = self.renderer.prompt_ids(messages)
            lead = next((i for i, t in enumerate(ids) if t not in self.renderer.specials), 0)
            head, text, trail = ids[:lead], ids[lead:], []
        elif isinstance(prompt, str):
            head, text, trail = split_specials(self.backend.encode(prompt))
        else:
            raise FtpipeError(
                "This model was tuned on prompt text, not on conversations: give each prompt "
                "as text (a `text` column), not as a list of messages."
            )
        room = max(self.config.data.max_length - len(head) - len(trail), 1)
        return head + text[-room:] + trail

    def ask(self, prompts: Sequence[Prompt], streamer: Any = None) -> list[str]:
        """Answers to prompts as a user writes them.

        An Alpaca model's prompts are instructions, rendered first as its training prompts
        were (`ftpipe.tasks.alpaca.render_prompt`).
        """
        if self.config.data.instruction_column is not None:
            prompts = [render_prompt(p) if isinstance(p, str) else p for p in prompts]
        return self.generate(prompts, streamer)

    def generate(self, prompts: Sequence[Prompt], streamer: Any = None) -> list[str]:
        """Each prompt's answer: the generated tokens up to EOS, decoded.

        Args:
            prompts: Prompt texts or conversations.
            streamer: A transformers streamer that receives the tokens as they come (one
                prompt at a time), or None.
        """
        encoded = [self.prompt_ids(p) for p in prompts]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        answers = [""] * len(prompts)
        torch.manual_seed(self.config.seed)
        for start in range(0, len(order), self.settings.batch_size):
            rows = order[start : start + self.settings.batch_size].tolist()
            width = max(len(encoded[i]) for i in rows)
            # Left padding: every prompt ends where generation starts.
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, i in enumerate(rows):
                ids[j, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[j, width - len(encoded[i]) :] = 1
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, streamer=streamer, **self.options
                )
            for j, i in enumerate(rows):
                new = out[j, width:].tolist()
                if self.eos_id in new:
                    new = new[: new.index(self.eos_id)]
                answers[i] = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return answers

    @cached_property
    def options(self) -> dict[str, Any]:
        """`generate` keyword arguments from the settings."""
        s = self.settings
        sampling = {"temperature": s.temperature, "top_p": s.top_p} if s.do_sample else {}
        return {
            "max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample, **sampling,
            "eos_token_id": self.eos_id, "pad_token_id": self.pad_id,
        }  # fmt: skip

    @cached_property
    def eos_id(self) -> int:
        """The id that ends an answer: the one that ended every training target."""
        if self.renderer is not None:
            return self.renderer.eos_id
        return end_of_text_id(ModelConfig(name=str(self.directory)))

    def row_losses(
        self, texts: list[str], pairs: list[str] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the summed loss over its target tokens, and how many there are."""
        ends = pairs is not None and self.task.ends_completions
        tokens = encode_rows(
            self.backend, self.task, self.config.data.max_length, texts, pairs,
            self.eos_id if ends else None, self.renderer, "score",
            self.config.data.train_on == "all",
        )  # fmt: skip
        columns = self.task.prep_columns(tokens)
        split = Split(
            input_ids=tokens.input_ids, token_type_ids=None, labels=np.zeros(len(texts), np.int64),
            prompt_lengths=columns["prompt_length"].to_numpy() if "prompt_length" in columns
            else None,
            token_labels=columns["token_labels"].to_pylist() if "token_labels" in columns
            else None,
        )  # fmt: skip
        sums, counts = np.zeros(len(texts)), np.zeros(len(texts), np.int64)
        order = np.argsort(split.lengths, kind="stable")
        for rows, tensors in batches(split, self.batch_size, self.pad_id, order):
            targets = self.task.targets(split, rows, tensors)
            with torch.inference_mode():
                logits = self.model(**tensors).logits
            losses, mask = token_losses(logits, targets)
            sums[rows] = (losses * mask).sum(dim=1).double().numpy()
            counts[rows] = mask.sum(dim=1).numpy()
        return sums, counts

    def heldout(self, texts: list[str], pairs: list[str] | None, generate_rows: int) -> LMOutputs:
        """The held-out loss of every row, and answers to the first rows with a reference."""
        sums, counts = self.row_losses(texts, pairs)
        chat = self.renderer is not None
        rows = [prompted(t, p, chat) for t, p in zip(texts, pairs or [None] * len(texts),
                                                     strict=True)]  # fmt: skip
        asked = [row.prompt for row in rows if row.reference is not None][:generate_rows]
        return LMOutputs(sums, counts, rows, self.generate(asked) if asked else [])
