"""`data.packing`: rows packed per micro-batch, the loss unchanged, no attention across rows.

Tiny random-init Llama and Qwen2 models built from configs, on a word-level tokenizer; the
targets come from prep and the task as in training, then the batching layer packs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.chats import TEMPLATES
from ftpipe.data.prepared import load_prepared
from ftpipe.errors import ConfigError
from ftpipe.tasks import get_task
from ftpipe.train.batching import BatchSource
from ftpipe.train.local import train_local
from ftpipe.train.packing import Packer, pack_rows
from tests.helpers import save_decoder_tokenizer, write_jsonl

MARKERS = ("<|im_start|>", "<|im_end|>")
WORDS = ["user", "assistant", "my", "order", "is", "late", "please", "wait", "card", "was",
         "charged", "twice", "refund", "sent", "hello", "hi", "the", "app", "crash"]  # fmt: skip
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A tokenizer with chatml as its own template, and its vocabulary."""
    directory = tmp_path_factory.mktemp("packing-lm")
    vocab = save_decoder_tokenizer(directory, WORDS, specials=MARKERS,
                                   chat_template=TEMPLATES["chatml"])  # fmt: skip
    return directory, vocab


def tiny_model(family: str, vocab: dict[str, int], **settings):
    """A 2-layer random-init decoder of `family`, in eval mode (no dropout either way)."""
    import transformers as hf

    shape = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
             "pad_token_id": vocab["<pad>"], "eos_token_id": vocab["</s>"], **settings}  # fmt: skip
    torch.manual_seed(0)
    classes = {"llama": (hf.LlamaForCausalLM, hf.LlamaConfig),
               "qwen2": (hf.Qwen2ForCausalLM, hf.Qwen2Config)}  # fmt: skip
    model_class, config_class = classes[family]
    return model_class(config_class(**shape)).eval()


def records(kind: str, n: int, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """`n` rows of varied length of one kind, and the data keys that read them."""
    rng = np.random.default_rng(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS[2:], size=int(rng.integers(low, high))))

    if kind == "text":
        return [{"text": words(1, 16)} for _ in range(n)], {}
    if kind == "completion":
        rows = [{"prompt": words(1, 12), "completion": words(1, 6)} for _ in range(n)]
        return rows, {"text_column": "prompt", "completion_column": "completion"}
    turns = [(("user", words(1, 8)), ("assistant", words(1, 5))) for _ in range(n)]
    rows = [{"messages": [{"role": r, "content": c} for r, c in turn]} for turn in turns]
    return rows, {"messages_column": "messages"}


def prepare(tmp_path: Path, model_dir: Path, rows: list[dict], keys: dict, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = {
        "seed": 3,
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "task": "causal-lm",
            "duplicates": "keep", "max_length": MAX_LENGTH, "eval_fraction": 0.25,
            "output_dir": str(tmp_path / "prep"), **keys,
        },
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        "train": {"batch_size": 8, "num_workers": 1, "epochs": 6, "lr": 5e-3, "head_lr": 5e-3,
                  "output_dir": str(tmp_path / "train"), "log_every_steps": 1000},
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config


def test_rows_pack_into_as_few_sequences_as_first_fit_needs_and_of_even_length():
    lengths = np.array([5, 9, 3, 12, 7, 2])
    # First fit decreasing needs 3 packs (12+3, 9+7, 5+2: the longest 16 tokens); dealt
    # longest first to the shortest pack, they hold 12+2, 9+3 and 7+5: 14 at most.
    assert pack_rows(lengths, 16) == [[3, 5], [1, 2], [4, 0]]
    # Where dealing would overflow a pack (5+4 and 5+3+3), first fit's packs stand.
    assert pack_rows(np.array([5, 5, 4, 3, 3]), 10) == [[0, 1], [2, 3, 4]]


def test_a_pack_restarts_positions_blocks_attention_and_masks_each_rows_first_target():
    rows = [[11, 12, 13], [21, 22], [31, 32, 33, 34]]
    ids = torch.zeros(3, 4, dtype=torch.long)
    mask = torch.zeros(3, 4, dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)], mask[j, : len(row)] = torch.tensor(row), 1
    labels = ids.masked_fill(mask == 0, -100)
    packed = Packer(capacity=7, pad_id=0).pack(
        {"input_ids": ids, "attention_mask": mask, "labels": labels}, np.array([3, 2, 4])
    )
    # Two packs: the 4-token row (and a padding token), then the 3- and 2-token rows.
    assert packed["input_ids"].tolist() == [[31, 32, 33, 34, 0], [11, 12, 13, 21, 22]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[-100, 32, 33, 34, -100], [-100, 12, 13, -100, 22]]
    causal = torch.ones(5, 5, dtype=torch.int).tril()
    rows = torch.zeros(5, 5, dtype=torch.int)
    rows[:3, :3] = rows[3:, 3:] = 1
    assert torch.equal(packed["attention_mask"][1, 0].int(), causal * rows)
    # The padding attends only to itself (no query of the mask is empty, so no NaN).
    padding = torch.zeros(5, 5, dtype=torch.int)
    padding[:4, :4] = padding[4, 4] = 1
    assert torch.equal(packed["attention_mask"][0, 0].int(), causal * padding)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("kind", ["text", "completion", "chat"])
def test_the_packed_loss_equals_the_unpacked_loss(tmp_path, lm_dir, family, kind):
    model_dir, vocab = lm_dir
    config = prepare(tmp_path, model_dir, *records(kind, 24))
    split = load_prepared(config.data.output_dir).splits["train"]
    model = tiny_model(family, vocab)
    task, pad, cpu = get_task("causal-lm"), vocab["<pad>"], torch.device("cpu")
    packer = Packer.for_model(model, "full", MAX_LENGTH, pad)
    rows = np.arange(8)
    unpacked = BatchSource(split, pad, task).batch(rows, cpu)
    packed = BatchSource(split, pad, task, packer=packer).batch(rows, cpu)
    assert len(packed["input_ids"]) < len(rows), "nothing was packed"
    # The same target tokens, both ways (the unpacked first target is never predicted).
    assert (packed["labels"] != -100).sum() == (unpacked["labels"][:, 1:] != -100).sum() > 0
    with torch.no_grad():
        expected, got = model(**unpacked).loss, model(**packed).loss
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_no_attention_crosses_a_row_and_each_row_computes_as_alone(lm_dir, family, attention):
    _, vocab = lm_dir
    model = tiny_model(family, vocab, attn_implementation=attention)
    packer = Packer.for_model(model, "full", 16, vocab["<pad>"])
    first, second = [2, 6, 7, 8, 9, 10], [2, 11, 12, 13]

    def last_row_logits(rows: list[list[int]]) -> torch.Tensor:
        """The logits of the last of `rows`, packed together into one sequence."""
        lengths = np.array([len(row) for row in rows])
        ids = torch.tensor([row + [0] * (6 - len(row)) for row in rows])
        mask = (torch.arange(6) < torch.from_numpy(lengths).unsqueeze(1)).long()
        packed = packer.pack({"input_ids": ids, "attention_mask": mask, "labels": ids}, lengths)
        assert len(packed["input_ids"]) == 1, "the rows share one sequence"
        with torch.no_grad():
            logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        return logits[lengths[:-1].sum() : lengths.sum()]

    together = last_row_logits([first, second])
    changed = last_row_logits([[2, 14, 15, 16, 17, 18], second])
    assert torch.equal(together, changed)  # row 1's tokens do not reach row 2
    assert torch.allclose(together, last_row_logits([second]), atol=1e-5)  # positions restart


@pytest.mark.parametrize(
    ("settings", "attention", "strategy", "message"),
    [
        ({"sliding_window": 8, "use_sliding_window": True}, "sdpa", "full",
         r"sliding window of 8"),
        ({}, "flash_attention_2", "full", r"'flash_attention_2'"),
        ({}, "sdpa", "prompt-tuning", r"strategy\.name=prompt-tuning"),
    ],
    ids=["sliding-window", "attention", "virtual-tokens"],
)  # fmt: skip
def test_packing_refuses_a_model_that_would_not_honour_it(
    lm_dir, settings, attention, strategy, message
):
    import peft

    _, vocab = lm_dir
    model = tiny_model("qwen2", vocab, **settings)
    model.config._attn_implementation = attention  # set as loading would, without the kernel
    if strategy == "prompt-tuning":
        model = peft.get_peft_model(
            model, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
        )
    with pytest.raises(ConfigError, match=rf"data\.packing.*{message}|{message}.*data\.packing"):
        Packer.for_model(model, strategy, MAX_LENGTH, vocab["<pad>"])


def test_packed_training_learns_and_a_resume_continues_at_its_step_with_the_same_batches(
    tmp_path, lm_dir
):
    model_dir, vocab = lm_dir
    run_dir = tmp_path / "model"
    tiny_model("llama", vocab).save_pretrained(run_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (run_dir / name).write_bytes((model_dir / name).read_bytes())
    # Each question has one answer, after a varied number of filler words: learnable rows of
    # varied length.
    pairs = [("my order is late", "please wait"), ("my card was charged twice", "refund sent"),
             ("hello", "hi"), ("the app", "crash")]  # fmt: skip
    rows = [{"prompt": f"{question}{' the' * (i % 9)}", "completion": answer}
            for i in range(12) for question, answer in pairs]  # fmt: skip
    keys = {"text_column": "prompt", "completion_column": "completion"}
    settings = ("data.packing=true", "train.epochs=3", "train.eval_every_steps=4",
                "train.keep_checkpoints=100")  # fmt: skip

    whole = train_local(prepare(tmp_path / "whole", run_dir, rows, keys, *settings))
    latest = max(Path(whole.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 0.8, history
    final = whole.final_metrics
    assert 0 <= final["padding_share"] < final["padding_share_unpacked"]

    checkpoint = Path(whole.best_checkpoint).parent / "step-00000004"
    resume = f"train.resume_from={checkpoint}"
    resumed = train_local(prepare(tmp_path / "resumed", run_dir, rows, keys, *settings, resume))
    assert resumed.final_metrics["start_step"] == 4
    assert resumed.final_metrics["step"] == final["step"]
    assert resumed.final_metrics["loss"] == pytest.approx(final["loss"], abs=1e-6)
