"""A tiny causal-LM world for tests: ticket routing as prompts or chats, and a Llama that learns it.

Each prompt asks to route a ticket about a product; the answer (a team) follows from the
product word alone, and filler words make every prompt distinct, so held-out prompts differ
from the trained ones while a tiny model trained for a minute answers them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.chats import TEMPLATES
from ftpipe.train.local import train_local
from tests.helpers import save_decoder_tokenizer, write_jsonl

MARKERS = ("<|im_start|>", "<|im_end|>")
PRODUCTS = {
    "printer": "hardware team",
    "laptop": "hardware team",
    "invoice": "billing team",
    "refund": "billing team",
    "password": "identity team",
    "login": "identity team",
}
FILLERS = ["please", "kindly", "urgent", "now", "today", "again", "asap", "quickly"]
WORDS = [
    "system",
    "user",
    "assistant",
    "route",
    "ticket",
    "about",
    "my",
    "the",
    "team",
    "is",
    *PRODUCTS,
    *{w for v in PRODUCTS.values() for w in v.split()},
    *FILLERS,
]


def tickets() -> list[tuple[str, str]]:
    """(prompt, answer) rows: the answer follows from the product word, fillers vary."""
    rows = []
    for i, filler in enumerate(FILLERS):
        for j, (product, team) in enumerate(PRODUCTS.items()):
            start = "my" if (i + j) % 2 else "the"
            rows.append((f"{filler} route {start} ticket about {product}", team))
    return rows


def chat_lm_dir(directory: Path) -> Path:
    """A tiny random-init Llama and a word-level tokenizer carrying chatml, in `directory`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = save_decoder_tokenizer(directory, WORDS, specials=MARKERS,
                                   chat_template=TEMPLATES["chatml"])  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(vocab), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=96, pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"], bos_token_id=vocab["<s>"],
    )).save_pretrained(directory)  # fmt: skip
    return directory


def trained(tmp_path: Path, model_dir: Path, chat: bool, *overrides: str):
    """Prep and train on the tickets, as conversations or prompt + completion.

    Returns:
        The config and the training outcome.
    """
    pairs = tickets()
    if chat:
        rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
                for p, a in pairs]  # fmt: skip
        columns = {"messages_column": "messages"}
    else:
        rows = [{"prompt": p, "completion": a} for p, a in pairs]
        columns = {"text_column": "prompt", "completion_column": "completion"}
    raw = {
        "seed": 3,
        "data": {"train": str(write_jsonl(tmp_path / "rows.jsonl", rows)), "task": "causal-lm",
                 "eval_fraction": 0.25, "max_length": 32, "output_dir": str(tmp_path / "prep"),
                 **columns},
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        # At lr 1e-2 this model's training was chaotic: the thread count alone moved the
        # held-out loss from 0.006 to 0.2. At 3e-3 it converges for any seed or thread count.
        "train": {"batch_size": 8, "num_workers": 1, "epochs": 30, "lr": 3e-3,
                  "warmup_ratio": 0.0, "output_dir": str(tmp_path / "train")},
        "evaluate": {"generate_rows": 9, "latency_rows": 2,
                     "output_dir": str(tmp_path / "evaluate")},
        "generate": {"max_new_tokens": 6},
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config, train_local(config)
