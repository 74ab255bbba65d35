"""Prompt + completion rows for causal LMs: tokenized apart, ended with EOS, trimmed prompt first.

A completion is what the model learns to write, so three things must hold for every row:

* **It ends with the tokenizer's end of text** (EOS; a tokenizer without one ends with its
  separator). Without it a fine-tuned model never learns to stop.
* **Its tokens are the completion's own.** The prompt is encoded with the tokenizer's
  single-sequence special tokens (a BOS for Llama-style tokenizers), the completion with none,
  and the row is their concatenation, so the prompt length that masks the loss is read off the
  token ids, never off string offsets.
* **Truncation never removes the target first.** A row over `data.max_length` loses its
  prompt's text from the left (the start of a long context matters least, and the special
  tokens stay); only when the completion alone does not fit is it cut, from the right, and the
  row counted (`cut_completions` in stats.json), so no row loses its target silently.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm.auto import tqdm

from ftpipe.config.schema import ModelConfig
from ftpipe.data.tokenize import CHUNK_ROWS, Tokenized, count_words, unknown_id
from ftpipe.errors import DataError
from ftpipe.hub import resolve_model


def end_of_text_id(model: ModelConfig) -> int:
    """The id that ends every completion: the tokenizer's EOS, else its separator.

    Raises:
        DataError: If the tokenizer names neither.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(model.name), revision=model.revision, trust_remote_code=False
    )
    for name in ("eos_token_id", "sep_token_id"):
        if (token := getattr(tokenizer, name, None)) is not None:
            return int(token)
    raise DataError(
        f"The tokenizer of model.name={model.name!r} names no end-of-text (EOS) token, so a "
        "completion cannot be ended and the model would never learn to stop. Use a model "
        "whose tokenizer_config.json sets eos_token."
    )


def tokenize_completions(
    tokenizer: Tokenizer,
    prompts: list[str],
    completions: list[str],
    max_length: int,
    eos_id: int,
    desc: str = "tokenize",
    train_prompt: bool = False,
) -> Tokenized:
    """Encode prompt + completion + EOS rows, at most `max_length` tokens each.

    Args:
        tokenizer: An untruncated, unpadded tokenizer (`ftpipe.data.tokenize.load_tokenizer`).
        prompts: Each row's prompt.
        completions: Each row's completion.
        max_length: Longest allowed row, special tokens and EOS included.
        eos_id: The id that ends each completion (`end_of_text_id`).
        desc: Progress-bar label.
        train_prompt: Train on the prompt too (`data.train_on: all`): no token is masked.

    Returns:
        Token ids with `second_starts` holding each row's prompt length (where its completion
        starts; 0 with `train_prompt`, so nothing is masked), and the rows trimmed and cut
        counted.

    Raises:
        DataError: If `max_length` leaves no room for a completion token after the special
            tokens.
    """
    unk_id = unknown_id(tokenizer)
    input_ids, starts = [], []
    lengths = np.empty(len(prompts), dtype=np.int64)
    pieces = words = unknown = trimmed = cut = 0
    with tqdm(total=len(prompts), desc=desc, unit="rows", disable=None, leave=False) as bar:
        for start in range(0, len(prompts), CHUNK_ROWS):
            heads = tokenizer.encode_batch(prompts[start : start + CHUNK_ROWS])
            tails = tokenizer.encode_batch(
                completions[start : start + CHUNK_ROWS], add_special_tokens=False
            )
            for offset, (head, tail) in enumerate(zip(heads, tails, strict=True)):
                prompt, target = split_specials(head), [*tail.ids, eos_id]
                lengths[start + offset] = sum(map(len, prompt)) + len(target)
                pieces += len(head.ids) - sum(head.special_tokens_mask) + len(tail.ids)
                words += count_words(head) + count_words(tail)
                if unk_id is not None:
                    unknown += head.ids.count(unk_id) + tail.ids.count(unk_id)
                prompt, target, was_trimmed, was_cut = fit_row(prompt, target, max_length)
                trimmed, cut = trimmed + was_trimmed, cut + was_cut
                input_ids.append(prompt + target)
                starts.append(0 if train_prompt else len(prompt))
            bar.update(len(heads))
    return Tokenized(
        input_ids=input_ids, token_type_ids=None, second_starts=starts, lengths=lengths,
        pieces=pieces, words=words, unknown=unknown, trimmed_prompts=trimmed, cut_completions=cut,
    )  # fmt: skip


def split_specials(encoding: Encoding) -> tuple[list[int], list[int], list[int]]:
    """The prompt's leading special tokens, its text's tokens, and its trailing special tokens."""
    ids, special = encoding.ids, encoding.special_tokens_mask
    first = next((i for i, s in enumerate(special) if not s), len(ids))
    last = next((i for i in range(len(ids), first, -1) if not special[i - 1]), first)
    return ids[:first], ids[first:last], ids[last:]


def fit_row(
    prompt: tuple[list[int], list[int], list[int]], target: list[int], max_length: int
) -> tuple[list[int], list[int], bool, bool]:
    """Trim the prompt's text from the left, then cut the target from the right, to fit.

    Args:
        prompt: The prompt's leading special tokens, its text's tokens, its trailing ones.
        target: The tokens the loss covers.
        max_length: The most tokens the row may keep.

    Returns:
        The prompt (special tokens kept), the target, and whether each was shortened.
    """
    lead, text, trail = prompt
    over = len(lead) + len(text) + len(trail) + len(target) - max_length
    if over <= 0:
        return lead + text + trail, target, False, False
    dropped = min(over, len(text))
    over -= dropped
    if over >= len(target):
        raise DataError(
            f"data.max_length={max_length} leaves no room for a completion after the "
            f"{len(lead) + len(trail)} special tokens the tokenizer adds. Raise data.max_length."
        )
    return lead + text[dropped:] + trail, target[: len(target) - over], dropped > 0, over > 0
