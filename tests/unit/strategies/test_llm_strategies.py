"""Strategies on chat models: learning on conversations, exports that generate as trained,
p-tuning v2 (deep prompts) and qlora (LoRA on a 4-bit base, refused where it cannot run).

Models are tiny random-init Llama and Qwen2 decoders with a chatml template. The Llama one has
the word-level tokenizer of `tests.helpers`; transformers 5 loads any tokenizer beside a Qwen2
config as its own byte-level BPE `Qwen2Tokenizer`, which reads a word-level vocabulary as
unknown tokens only, so the Qwen2 one gets a byte-level BPE trained on the same words.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers as hf
from safetensors.torch import load_file

from ftpipe.config.load import validate_config
from ftpipe.data.chats import TEMPLATES
from ftpipe.errors import ConfigError, FtpipeError
from ftpipe.strategies import prepare
from ftpipe.strategies.param_groups import param_groups
from ftpipe.strategies.qlora import qlora_problem, quantized_loading
from ftpipe.tasks import get_task
from ftpipe.train.export import Export, load_export, write_export
from ftpipe.train.local import train_local
from ftpipe.train.model import load_base_model
from tests.helpers import save_decoder_tokenizer
from tests.unit.data.test_chats import CONVERSATION, MARKERS, WORDS, prep_chats, support_chats

FAMILIES = {
    "llama": (hf.LlamaConfig, hf.LlamaForCausalLM),
    "qwen2": (hf.Qwen2Config, hf.Qwen2ForCausalLM),
}
TOKENS, ENCODER = 4, 16  # virtual tokens, and the width of p-tuning v2's projection
NO_CPU_QLORA = (
    "strategy.name=qlora trains LoRA adapters on a 4-bit base model through bitsandbytes, which "
    "quantizes on CUDA GPUs only, and this worker has none. Use strategy.name=lora"
)


def save_byte_level_tokenizer(directory: Path) -> dict[str, int]:
    """Save a Qwen2-style byte-level BPE with chatml, whose tokens are `WORDS`; return the vocab."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<pad>", "</s>", *MARKERS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator([" ".join(WORDS), *WORDS], trainer)  # whole words, both forms
    fast = hf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                                      eos_token="</s>", unk_token="</s>")  # fmt: skip
    fast.chat_template = TEMPLATES["chatml"]
    fast.save_pretrained(directory)
    return fast.get_vocab()


def chat_lm(directory: Path, family: str) -> dict[str, int]:
    """Save a tiny random-init chat model of `family` with its tokenizer; return the vocab."""
    if family == "qwen2":
        vocab = save_byte_level_tokenizer(directory)
    else:
        vocab = save_decoder_tokenizer(directory, WORDS, specials=MARKERS,
                                       chat_template=TEMPLATES["chatml"])  # fmt: skip
    shape, model = FAMILIES[family]
    torch.manual_seed(0)
    # A wider initialisation than the default 0.02: frozen output layers (LoRA, deep prompts)
    # of the default size cap every logit near 0.6, and so the loss near uniform.
    model(shape(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=64, pad_token_id=vocab["<pad>"],
                eos_token_id=vocab["</s>"], initializer_range=0.3)
          ).save_pretrained(directory)  # fmt: skip
    return vocab


def strategy_config(model_dir: Path, name: str, **strategy):
    return validate_config({
        "data": {"train": "x.jsonl", "task": "causal-lm", "messages_column": "messages"},
        "model": {"name": str(model_dir)},
        "strategy": {"name": name, "freeze_layers": -1, "lora": {"r": 4, "dropout": 0.0},
                     "prompt": {"num_virtual_tokens": TOKENS, "encoder_hidden_size": ENCODER},
                     **strategy},
    })  # fmt: skip


LEARNING = {
    "full": (),
    "freeze": ("strategy.freeze_layers=-1",),  # the top block (and the output layer) trains
    "lora": ("train.head_lr=5e-2",),  # adapters are new weights: they train at head_lr
    "p-tuning-v2": ("train.head_lr=3e-2",),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", LEARNING)
def test_the_loss_on_conversations_decreases(tmp_path, family, strategy):
    model_dir = tmp_path / "model"
    chat_lm(model_dir, family)
    config = prep_chats(tmp_path, model_dir, support_chats(24), f"strategy.name={strategy}",
                        "train.epochs=5", *LEARNING[strategy])  # fmt: skip
    outcome = train_local(config)
    latest = max(Path(outcome.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 0.7, history
    if strategy == "freeze":
        check_only_the_top_block_trained(model_dir, Path(outcome.model_dir))


def check_only_the_top_block_trained(base_dir: Path, export_dir: Path) -> None:
    """Embeddings and block 0 are bit-identical to the base; block 1 and the output moved."""
    base, trained = (load_file(str(d / "model.safetensors")) for d in (base_dir, export_dir))
    assert base.keys() == trained.keys()
    for name, weight in base.items():
        frozen = name.startswith(("model.embed_tokens.", "model.layers.0."))
        assert torch.equal(weight, trained[name]) == frozen, name


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_export_generates_what_the_trained_model_generates(tmp_path, family):
    model_dir = tmp_path / "model"
    vocab = chat_lm(model_dir, family)
    tokenizer = hf.AutoTokenizer.from_pretrained(model_dir)
    answer = tokenizer.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    ids = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    prompt = tokenizer(tokenizer.apply_chat_template(CONVERSATION[1:2], tokenize=False,
                                                     add_generation_prompt=True),
                       add_special_tokens=False, return_tensors="pt")  # fmt: skip
    config = strategy_config(model_dir, "lora")
    prepared = prepare(load_base_model(config, None)[0], config)
    optimizer = torch.optim.AdamW(param_groups(prepared, config.train.model_copy(
        update={"head_lr": 3e-2})))  # fmt: skip
    for _ in range(60):  # learn the one answer by heart, so the adapter decides the output
        prepared.model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": vocab["<pad>"]}

    def generate(model) -> list[int]:
        return model.eval().generate(**prompt, **settings)[0, prompt["input_ids"].shape[1] :]

    with torch.no_grad():
        expected = generate(prepared.model).tolist()
        # The answer, then EOS: the trained adapter, not the random base, is speaking.
        learned = tokenizer("please wait", add_special_tokens=False)["input_ids"]
        assert expected[: len(learned) + 1] == [*learned, vocab["</s>"]]
        for merge, kind in ((True, "transformers"), (False, "peft")):
            config = strategy_config(model_dir, "lora", merge_adapter=merge)
            directory = write_export(prepared.model, config, None, {"step": 60}, tmp_path / kind)
            export = Export.open(directory)
            assert export.kind == kind
            assert generate(load_export(export)[0]).tolist() == expected, kind


def test_p_tuning_v2_trains_deep_prompts_through_a_projection(tmp_path):
    import peft

    model_dir = tmp_path / "model"
    chat_lm(model_dir, "qwen2")
    config = strategy_config(model_dir, "p-tuning-v2")
    model = load_base_model(config, None)[0]
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    prepared = prepare(model, config)
    settings = prepared.model.peft_config["default"]
    assert isinstance(settings, peft.PrefixTuningConfig)
    assert (settings.prefix_projection, settings.encoder_hidden_size) == (True, ENCODER)
    assert not prepared.gradient_checkpointing  # past key values cannot be recomputed
    # An embedding per virtual token, then Linear(kv, ENCODER), tanh, Linear(ENCODER, 2 x layers
    # x kv): keys and values for every layer, as wide as the key/value heads (GQA: 16).
    kv, layers = 16, 2
    expected = (
        TOKENS * kv + (kv * ENCODER + ENCODER) + (ENCODER * 2 * layers * kv + 2 * layers * kv)
    )
    trainable = [p for p in prepared.model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    ids = torch.tensor([[2, 5, 6, 7, 8, 3]])
    optimizer = torch.optim.AdamW(param_groups(prepared, config.train))
    prepared.model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    for name, parameter in prepared.model.get_base_model().named_parameters():
        assert torch.equal(parameter, base[name]), f"a frozen weight moved: {name}"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("strategy", ["p-tuning-v2", "qlora"])
def test_p_tuning_v2_and_qlora_refuse_merging_and_zero3(strategy):
    for settings, refusal in (
        ({"strategy": {"name": strategy, "merge_adapter": True}},
         rf"strategy\.merge_adapter=true cannot apply to strategy\.name={strategy}"),
        ({"strategy": {"name": strategy}, "train": {"zero_stage": 3}},
         rf"strategy\.name={strategy} cannot run with train\.zero_stage=3"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=refusal):
            validate_config({"data": {"train": "x.csv"}, **settings})
    validate_config({"data": {"train": "x.csv"}, "strategy": {"name": strategy}})


def test_token_classification_takes_deep_prompts_where_the_model_takes_a_prefix():
    task = get_task("token-classification")
    for strategy in ("p-tuning-v2", "qlora"):
        task.check_strategy(strategy)  # no added positions: every token keeps its tag
    config = validate_config({"data": {"train": "x.conll", "task": "token-classification"},
                              "strategy": {"name": "p-tuning-v2"}})  # fmt: skip
    shape = {"vocab_size": 50, "num_labels": 3}
    bert = hf.BertForTokenClassification(
        hf.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **shape,
        )
    )
    assert any(p.requires_grad for p in prepare(bert, config).model.parameters())
    distilbert = hf.DistilBertForTokenClassification(
        hf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **shape)
    )
    with pytest.raises(
        FtpipeError,
        match=r"strategy\.name=p-tuning-v2 needs a model that "
        r"accepts past key values, and DistilBertForTokenClassification",
    ):
        prepare(distilbert, config)  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="qlora runs on this GPU machine")
def test_qlora_on_cpu_is_refused_before_the_model_loads(tmp_path):
    missing = strategy_config(tmp_path / "no-such-model", "qlora")
    with pytest.raises(ConfigError) as error:  # a ConfigError, not "cannot load the model"
        load_base_model(missing, None)
    assert NO_CPU_QLORA in str(error.value)
    model_dir = tmp_path / "model"
    chat_lm(model_dir, "llama")
    config = strategy_config(model_dir, "qlora")
    with pytest.raises(ConfigError, match=NO_CPU_QLORA):
        prepare(hf.AutoModelForCausalLM.from_pretrained(model_dir), config)


def pretend_gpu(monkeypatch, bitsandbytes: bool) -> None:
    """This machine has a CUDA GPU, and bitsandbytes if asked for."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: (object() if bitsandbytes else None) if name == "bitsandbytes"
        else find_spec(name, *a),
    )  # fmt: skip


def test_qlora_without_bitsandbytes_says_to_install_it(monkeypatch):
    pretend_gpu(monkeypatch, bitsandbytes=False)
    assert "which is not installed here (pip install bitsandbytes)" in qlora_problem()


def test_qlora_loads_the_base_in_4_bit_nf4_with_double_quantization(monkeypatch, tmp_path):
    pretend_gpu(monkeypatch, bitsandbytes=True)
    assert qlora_problem() is None
    loading = quantized_loading(strategy_config(tmp_path, "qlora"))
    quantization = loading["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert loading["device_map"] == {"": 0}  # this rank's GPU holds the whole quantized base
    assert quantized_loading(strategy_config(tmp_path, "lora")) == {}
