"""One table: every architecture x every strategy, on tiny random-init models.

Each case checks what trains (exact counts from first principles), that one optimizer step
leaves frozen weights bit-identical and moves trainable ones, that parameter groups carry the
intended learning rates, and for LoRA that the merged model equals the adapter model.
"""

from __future__ import annotations

import pytest
import torch
import transformers as hf
from torch import nn

from ftpipe.config.load import validate_config
from ftpipe.errors import FtpipeError
from ftpipe.strategies import STRATEGIES, discover, prepare
from ftpipe.strategies.merge import merge_adapter
from ftpipe.strategies.param_groups import param_groups

SMALL = {"vocab_size": 100, "num_labels": 3}
ARCHITECTURES = {
    "bert": lambda: hf.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **SMALL
    ),
    "roberta": lambda: hf.RobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=1, **SMALL,
    ),
    "distilbert": lambda: hf.DistilBertConfig(
        dim=32, n_layers=2, n_heads=2, hidden_dim=64, **SMALL
    ),
    "deberta-v2": lambda: hf.DebertaV2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        relative_attention=True, pos_att_type=["p2c", "c2p"], **SMALL,
    ),
    "gpt2": lambda: hf.GPT2Config(
        n_embd=32, n_layer=2, n_head=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, **SMALL
    ),
    "llama": lambda: hf.LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, pad_token_id=0, **SMALL,
    ),
    "qwen2": lambda: hf.Qwen2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, pad_token_id=0, **SMALL,
    ),
}  # fmt: skip
DECODERS = ("gpt2", "llama", "qwen2")
ENCODERS = ("bert", "roberta", "distilbert", "deberta-v2")
REFUSED = {
    **{(arch, deep, task): "accepts past key values" for deep in ("prefix", "p-tuning-v2")
       for arch in ("deberta-v2", "distilbert") for task in ("classifier", "token")},
    **{(arch, "feature-extraction", "causal-lm"): "classification head" for arch in DECODERS},
    **{(arch, s, "token"): "logits for them too"
       for arch in ENCODERS for s in ("p-tuning", "prompt-tuning")},
}  # fmt: skip
# qlora needs a GPU and a 4-bit base: tests/unit/strategies/test_llm_strategies.py covers it.
TABLED = sorted(set(STRATEGIES) - {"qlora"})
CASES = (
    [(arch, s, "classifier") for arch in ARCHITECTURES for s in TABLED]
    + [(arch, s, "causal-lm") for arch in DECODERS for s in TABLED]
    + [(arch, s, "token") for arch in ENCODERS for s in TABLED]
)
DATA_TASKS = {
    "classifier": "sequence-classification",
    "causal-lm": "causal-lm",
    "token": "token-classification",
}
AUTO = {
    "classifier": hf.AutoModelForSequenceClassification,
    "causal-lm": hf.AutoModelForCausalLM,
    "token": hf.AutoModelForTokenClassification,
}
LR, HEAD_LR, DECAY, WEIGHT_DECAY, R, TOKENS, ENCODER = 1e-3, 1e-2, 0.5, 0.01, 4, 4, 16


def build(arch: str, task: str) -> nn.Module:
    torch.manual_seed(0)
    return AUTO[task].from_config(ARCHITECTURES[arch]())


def config_for(strategy: str, task: str = "classifier"):
    return validate_config(
        {
            "data": {"train": "unused.csv", "task": DATA_TASKS[task]},
            "strategy": {
                "name": strategy,
                "freeze_layers": 1,
                "lora": {"r": R, "alpha": 8, "dropout": 0.0},
                "prompt": {"num_virtual_tokens": TOKENS, "encoder_hidden_size": ENCODER},
            },
            "train": {
                "lr": LR, "head_lr": HEAD_LR, "layer_decay": DECAY, "weight_decay": WEIGHT_DECAY
            },
        }
    )  # fmt: skip


def batch(task: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (4, 8), generator=generator)
    labels = {
        "causal-lm": ids,
        "classifier": torch.tensor([0, 1, 2, 1]),
        "token": torch.randint(0, 3, (4, 8), generator=generator).index_fill(1, torch.tensor(0),
                                                                             -100),
    }[task]  # fmt: skip
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def numel(params) -> int:
    return sum(p.numel() for p in params)


def expected_trainable(strategy: str, model: nn.Module, task: str) -> int:
    """Trainable parameter count from first principles, on the model before the strategy."""
    layout = discover(model)
    embeddings = numel(p for _, m in layout.embeddings for p in m.parameters())
    blocks = [numel(m.parameters()) for _, m in layout.blocks]
    head_params = {id(p): p for _, m in layout.head for p in m.parameters()}
    head = numel(head_params.values())
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    unique_total = numel({id(p): p for p in model.parameters()}.values())
    if strategy == "full":
        return unique_total
    if strategy == "freeze":  # embeddings and block 0 frozen (tied output layers go with them)
        return unique_total - embeddings - blocks[0]
    if strategy == "feature-extraction":  # a new linear layer on pooled (or per-token) features
        return hidden * model.config.num_labels + model.config.num_labels
    if strategy == "gradual-unfreezing":
        return head
    if task == "causal-lm":  # PEFT methods keep the pretrained output layer frozen
        head = 0
    if strategy == "prompt-tuning":
        return TOKENS * hidden + head
    heads = model.config.num_attention_heads
    kv_width = hidden // heads * getattr(model.config, "num_key_value_heads", heads)
    if strategy == "prefix":  # a key and a value per layer, as wide as the key/value heads
        return TOKENS * layers * 2 * kv_width + head
    if strategy == "p-tuning-v2":  # the same, projected from token embeddings by an MLP
        out = layers * 2 * kv_width
        return TOKENS * kv_width + kv_width * ENCODER + ENCODER + ENCODER * out + out + head
    return -1  # lora, ia3, p-tuning: counted from the adapted modules below


def adapter_count(strategy: str, model: nn.Module, task: str) -> int:
    head = 0 if task == "causal-lm" else None
    total = 0
    for name, module in model.named_modules():
        if strategy == "lora" and hasattr(module, "lora_A") and "default" in module.lora_A:
            total += R * (module.in_features + module.out_features)
        if strategy == "ia3" and hasattr(module, "ia3_l") and "default" in module.ia3_l:
            total += module.ia3_l["default"].numel()
        if strategy == "p-tuning" and name.endswith("prompt_encoder.default"):
            total += numel(module.parameters())
        if head is None and name.endswith("modules_to_save.default"):
            total += numel(module.parameters())
    return total


@pytest.mark.parametrize(("arch", "strategy", "task"), CASES, ids=["-".join(c) for c in CASES])
def test_strategy(arch: str, strategy: str, task: str):
    model = build(arch, task)
    if (arch, strategy, task) in REFUSED:
        with pytest.raises(FtpipeError, match=REFUSED[(arch, strategy, task)]):
            prepare(model, config_for(strategy, task))
        return
    expected = expected_trainable(strategy, model, task)
    prepared = prepare(model, config_for(strategy, task))
    trained = prepared.model
    trainable = {id(p): p for p in trained.parameters() if p.requires_grad}
    if expected < 0:
        expected = adapter_count(strategy, trained, task)
        assert expected > 0
    assert numel(trainable.values()) == expected

    groups = param_groups(prepared, config_for(strategy, task).train)
    check_learning_rates(prepared, groups, task)

    before = {id(p): p.detach().clone() for p in trained.parameters()}
    step(trained, groups, task)
    for parameter in trained.parameters():
        if id(parameter) in trainable:
            continue
        assert torch.equal(parameter, before[id(parameter)]), "a frozen weight moved"
    moved = [p for p in trainable.values() if not torch.equal(p, before[id(p)])]
    assert moved, "no trainable weight moved"
    assert all(not torch.equal(p, before[id(p)]) for p in trainable.values() if p.grad is not None
               and p.grad.abs().sum() > 0)  # fmt: skip

    if strategy == "gradual-unfreezing":
        check_gradual_unfreezing(prepared, task)
    if strategy == "lora":
        check_merge_matches_adapter(trained, task)


def step(model: nn.Module, groups, task: str) -> None:
    optimizer = torch.optim.AdamW(groups)
    model.train()
    model(**batch(task)).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def check_learning_rates(prepared, groups, task: str) -> None:
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    layout, n = prepared.layout, prepared.layout.num_blocks
    for parameter in prepared.model.parameters():
        if id(parameter) not in lr_of:
            continue
        is_matrix = parameter.ndim >= 2 and min(parameter.shape) > 1
        assert decay_of[id(parameter)] == (WEIGHT_DECAY if is_matrix else 0.0)
        if id(parameter) not in prepared.pretrained:
            assert lr_of[id(parameter)] == HEAD_LR
    if task == "causal-lm":  # the output layer is pretrained: the top backbone lr
        for _, head in layout.head:
            for parameter in head.parameters():
                if id(parameter) in lr_of and id(parameter) not in embedding_ids(layout):
                    assert lr_of[id(parameter)] == pytest.approx(LR)
    for depth, (_, block) in enumerate(layout.blocks, start=1):
        for parameter in block.parameters():
            if id(parameter) in lr_of and id(parameter) in prepared.pretrained:
                assert lr_of[id(parameter)] == pytest.approx(LR * DECAY ** (n - depth))
    for _, module in layout.embeddings:
        for parameter in module.parameters():
            if id(parameter) in lr_of:
                assert lr_of[id(parameter)] == pytest.approx(LR * DECAY**n)


def embedding_ids(layout) -> set[int]:
    return {id(p) for _, m in layout.embeddings for p in m.parameters()}


def check_gradual_unfreezing(prepared, task: str) -> None:
    layout = prepared.layout
    top_block = layout.blocks[-1][1]
    assert not any(p.requires_grad for p in top_block.parameters())
    schedule, total = prepared.unfreeze, 100
    assert schedule.apply(-(-total // (2 * len(schedule.groups))), total) == 1
    assert all(p.requires_grad for p in top_block.parameters())
    assert not any(p.requires_grad for p in layout.blocks[0][1].parameters())
    before = [p.detach().clone() for p in top_block.parameters()]
    step(prepared.model, param_groups(prepared, config_for("gradual-unfreezing", task).train), task)
    assert any(not torch.equal(p, b) for p, b in zip(top_block.parameters(), before, strict=True))
    assert schedule.apply(total // 2, total) == layout.num_blocks + 1
    assert all(p.requires_grad for p in prepared.model.parameters())


def check_merge_matches_adapter(model: nn.Module, task: str) -> None:
    model.eval()
    inputs = {k: v for k, v in batch(task).items() if k != "labels"}
    with torch.no_grad():
        with_adapter = model(**inputs).logits
        merged = merge_adapter(model)
        assert not any("lora_" in name for name, _ in merged.named_parameters())
        assert torch.allclose(merged(**inputs).logits, with_adapter, atol=1e-5)


def test_unsupported_model_names_what_is_missing():
    class NoBackbone(nn.Module):
        base_model_prefix = "encoder"

    with pytest.raises(
        FtpipeError, match=r"no submodule named by its base_model_prefix \('encoder'\)"
    ):
        discover(NoBackbone())


def test_headless_model_is_refused():
    model = hf.BertModel(ARCHITECTURES["bert"]())
    with pytest.raises(FtpipeError, match=r"Cannot find the (backbone|head)"):
        discover(model)


def test_freeze_depth_out_of_range_names_the_key():
    model = build("bert", "classifier")
    config = validate_config(
        {"data": {"train": "x.csv"}, "strategy": {"name": "freeze", "freeze_layers": -5}}
    )
    with pytest.raises(
        FtpipeError,
        match=r"strategy.freeze_layers=-5, but BertForSequenceClassification has 2 blocks",
    ):
        prepare(model, config)


@pytest.mark.parametrize(
    ("k", "trainable_blocks"), [(0, [0, 1]), (1, [1]), (2, []), (-1, [1]), (-2, [0, 1])]
)
def test_freeze_depth_counts_from_the_bottom_or_keeps_the_top(k, trainable_blocks):
    model = build("bert", "classifier")
    config = validate_config(
        {"data": {"train": "x.csv"}, "strategy": {"name": "freeze", "freeze_layers": k}}
    )
    layout = prepare(model, config).layout
    assert [
        i for i, (_, b) in enumerate(layout.blocks) if all(p.requires_grad for p in b.parameters())
    ] == trainable_blocks
    assert not any(p.requires_grad for _, m in layout.embeddings for p in m.parameters())


def test_freeze_by_module_name_pattern():
    model = build("bert", "classifier")
    config = validate_config(
        {"data": {"train": "x.csv"},
         "strategy": {"name": "freeze", "freeze_layers": 0, "freeze_patterns": ["*.attention.*"]}}
    )  # fmt: skip
    prepare(model, config)
    for name, parameter in model.named_parameters():
        expected = ".attention." not in name and "embeddings" not in name
        assert parameter.requires_grad == expected, name


def test_lora_target_modules_can_be_overridden():
    model = build("bert", "classifier")
    config = validate_config(
        {"data": {"train": "x.csv"},
         "strategy": {"name": "lora", "lora": {"target_modules": ["dense"]}}}
    )  # fmt: skip
    adapted = {
        n.rsplit(".", 1)[-1]
        for n, m in prepare(model, config).model.named_modules()
        if hasattr(m, "lora_A")
    }
    assert adapted == {"dense"}


def test_prefix_turns_gradient_checkpointing_off():
    raw = {"data": {"train": "x.csv"}, "train": {"gradient_checkpointing": True}}
    on = prepare(
        build("bert", "classifier"), validate_config({**raw, "strategy": {"name": "lora"}})
    )
    off = prepare(
        build("bert", "classifier"), validate_config({**raw, "strategy": {"name": "prefix"}})
    )
    assert on.gradient_checkpointing and not off.gradient_checkpointing


@pytest.mark.parametrize("strategy", ["prefix", "p-tuning-v2", "p-tuning", "prompt-tuning"])
def test_prompt_learning_under_zero3_is_refused(strategy):
    from ftpipe.errors import ConfigError

    with pytest.raises(
        ConfigError, match=rf"strategy.name={strategy} cannot run with train.zero_stage=3"
    ):
        validate_config(
            {"data": {"train": "x.csv"}, "strategy": {"name": strategy}, "train": {"zero_stage": 3}}
        )


@pytest.mark.parametrize("strategy", ["prefix", "p-tuning-v2", "p-tuning", "prompt-tuning"])
def test_merging_a_prompt_learning_adapter_is_refused(strategy):
    from ftpipe.errors import ConfigError

    refused = rf"merge_adapter=true cannot apply to strategy.name={strategy}: prompt learning"
    with pytest.raises(ConfigError, match=refused):
        validate_config(
            {"data": {"train": "x.csv"}, "strategy": {"name": strategy, "merge_adapter": True}}
        )
    # unset, or false, keeps the adapter: the default config loads
    validate_config({"data": {"train": "x.csv"}, "strategy": {"name": strategy}})


def test_auto_must_be_resolved_first():
    with pytest.raises(FtpipeError, match=r"strategy.name=auto must be resolved"):
        prepare(build("bert", "classifier"), validate_config({"data": {"train": "x.csv"}}))


def test_encoder_decoder_models_are_refused_by_name():
    config = hf.BartConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_labels=3,
    )  # fmt: skip
    model = hf.BartForSequenceClassification(config)
    with pytest.raises(
        FtpipeError,
        match=r"several block stacks \(model\.encoder\.layers, model\.decoder\.layers\)",
    ):
        discover(model)


def test_relative_position_embeddings_freeze_with_the_embeddings():
    model = build("deberta-v2", "classifier")
    config = validate_config(
        {"data": {"train": "x.csv"}, "strategy": {"name": "freeze", "freeze_layers": 2}}
    )
    prepare(model, config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "deberta.encoder.rel_embeddings.weight" not in trainable
    assert any(name.startswith("classifier") for name in trainable)


@pytest.mark.parametrize(
    ("arch", "targets"),
    [("bert", {"query", "value"}), ("deberta-v2", {"query_proj", "value_proj"}),
     ("gpt2", {"c_attn"}), ("llama", {"q_proj", "v_proj"}), ("qwen2", {"q_proj", "v_proj"}),
     # PEFT has no mapping for DistilBERT: every linear layer in the blocks is adapted.
     ("distilbert", {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"})],
)  # fmt: skip
def test_default_lora_targets_per_architecture(arch, targets):
    model = prepare(build(arch, "classifier"), config_for("lora")).model
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == targets


def test_unknown_lora_target_names_the_key_and_the_choices():
    config = validate_config(
        {
            "data": {"train": "x.csv"},
            "strategy": {"name": "lora", "lora": {"target_modules": ["qkv"]}},
        }
    )
    with pytest.raises(
        FtpipeError, match=r"strategy.lora.target_modules names 'qkv'.*query, value"
    ):
        prepare(build("bert", "classifier"), config)


def test_freeze_pattern_matching_nothing_is_an_error():
    config = validate_config(
        {"data": {"train": "x.csv"},
         "strategy": {"name": "freeze", "freeze_patterns": ["encoder.layer.*.attention*"]}}
    )  # fmt: skip
    with pytest.raises(
        FtpipeError, match=r"freeze_patterns entry 'encoder.layer.\*.attention\*' matches no"
    ):
        prepare(build("bert", "classifier"), config)


def test_gradual_unfreezing_under_zero_is_refused():
    from ftpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gradual-unfreezing cannot run with train.zero_stage=1"):
        validate_config(
            {"data": {"train": "x.csv"}, "strategy": {"name": "gradual-unfreezing"},
             "train": {"zero_stage": 1}}
        )  # fmt: skip


def test_head_and_backbone_stay_in_separate_groups_at_equal_rates():
    config = validate_config(
        {
            "data": {"train": "x.csv"},
            "strategy": {"name": "full"},
            "train": {"lr": 1e-4, "head_lr": 1e-4},
        }
    )
    prepared = prepare(build("bert", "classifier"), config)
    roles = {(g["role"], g["lr"]) for g in param_groups(prepared, config.train)}
    assert roles == {("new", 1e-4), ("pretrained", 1e-4)}
