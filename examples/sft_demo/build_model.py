"""Build the instruction-tuning demo's model: a tiny random-init Llama and a word-level tokenizer.

The demo needs a causal LM that trains on two CPU cores in about a minute and needs no download,
so it is built here from a config: 2 layers, hidden size 64, 4 heads, its weights drawn from a
fixed seed. Its tokenizer has one token per word of the demo's conversations (lowercased, split
at whitespace and at punctuation, so "ticket?" is "ticket" and "?"), plus `<pad>`, `<unk>`,
the `<s>` BOS, the `</s>` EOS and the chatml markers `<|im_start|>` and `<|im_end|>`, kept
whole. Its chat template is ftpipe's chatml, which ends every assistant turn with the EOS, so
`data.chat_template: auto` renders with it. The same data and seed give the same files.

Usage: python examples/sft_demo/build_model.py [DIRECTORY] [--data FILE ...]
  (defaults: outputs/models/sft-tiny-llama, from train.jsonl and test.jsonl beside this script)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ftpipe.data.chats import TEMPLATES
from ftpipe.errors import DataError

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = Path("outputs/models/sft-tiny-llama")
DEFAULT_DATA = [HERE / "train.jsonl", HERE / "test.jsonl"]
SEED = 0
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
MARKERS = ["<|im_start|>", "<|im_end|>"]
ROLES = ["system", "user", "assistant"]  # chatml writes the role names as plain words
SHAPE = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256,
         "tie_word_embeddings": True}  # fmt: skip
"""The model's size: about 150k parameters with the demo's vocabulary of ~290 words."""


def word_tokenizer(words: list[str]) -> Any:
    """A `tokenizers.Tokenizer` with one id per word of `words`, after the special tokens.

    With no words it still normalizes and splits text: `corpus_words` collects words with it.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SPECIALS, *MARKERS, *words]))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # Llama-style: a text encoded with special tokens opens with BOS (chatml adds none itself).
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in MARKERS])
    return tokenizer


def corpus_words(data: list[Path]) -> list[str]:
    """Every word of the conversations in `data` (JSONL with `messages`), sorted.

    Raises:
        DataError: If a line is not a JSON object with a list of messages, naming file and line.
    """
    splitter = word_tokenizer([])
    words = set(ROLES)
    for path in data:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                texts = [message["content"] for message in json.loads(line)["messages"]]
            except (ValueError, KeyError, TypeError) as error:
                raise DataError(
                    f"{path}:{number}: not a conversation ({error}). Each line of a --data file "
                    "must be a JSON object whose `messages` is a list of {role, content} "
                    "objects, as examples/sft_demo/make_data.py writes them."
                ) from error
            for text in texts:
                normal = splitter.normalizer.normalize_str(text)
                words.update(w for w, _ in splitter.pre_tokenizer.pre_tokenize_str(normal))
    return sorted(words)


def build(directory: Path, data: list[Path]) -> Path:
    """Save the tokenizer and a random-init Llama sized to its vocabulary in `directory`.

    Args:
        directory: Where the model goes (created; files already there are overwritten).
        data: JSONL files of conversations whose words the vocabulary must hold.

    Returns:
        `directory`, which `AutoModelForCausalLM` and `AutoTokenizer` load.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=word_tokenizer(corpus_words(data)), pad_token="<pad>",
        unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        model_max_length=SHAPE["max_position_embeddings"],
    )  # fmt: skip
    fast.chat_template = TEMPLATES["chatml"]
    ids = {name: fast.convert_tokens_to_ids(token)
           for name, token in [("pad", "<pad>"), ("bos", "<s>"), ("eos", "</s>")]}  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(fast), pad_token_id=ids["pad"], bos_token_id=ids["bos"],
        eos_token_id=ids["eos"], **SHAPE,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = ids["pad"]
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # safetensors
    fast.save_pretrained(directory)
    return directory


def main() -> None:
    """Build the model where the command line says."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--data", nargs="+", type=Path, default=DEFAULT_DATA,
                        help="JSONL conversations the vocabulary covers")  # fmt: skip
    args = parser.parse_args()
    directory = build(args.directory, args.data)
    print(f"saved a tiny Llama and its word-level tokenizer to {directory}")


if __name__ == "__main__":
    main()
