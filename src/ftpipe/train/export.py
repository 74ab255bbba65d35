"""Export a trained model to a directory users load with plain transformers or peft.

What the directory holds depends on the strategy (`ftpipe.json` says which):
* `transformers`: full, freeze and gradual unfreezing, and LoRA/IA3 merged into the base
  weights (`strategy.merge_adapter`): `AutoModelForSequenceClassification.from_pretrained(dir)`.
  A merged adapter is also kept alone in `adapter/`.
* `peft`: an adapter that is not merged (or cannot be, like prompt learning) in `adapter/`,
  loaded onto the base model named in `ftpipe.json` with `PeftModel.from_pretrained`.
* `pooled-classifier`: feature extraction; the untouched backbone (`AutoModel`) plus the
  linear head in `head.safetensors`, applied to the pooled features (`pooling`).

Every export also holds the tokenizer, label_map.json, the resolved config (config.yaml),
metrics.json and a model card (README.md). Weights are safetensors only. A classifier's
manifest also holds `temperature`, fit on the eval split (`ftpipe.tasks.calibration`): its
probabilities are softmax(logits / temperature).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from ftpipe.config.load import validate_config
from ftpipe.config.rules import rules_for
from ftpipe.config.schema import Config
from ftpipe.data.chats import ChatRenderer
from ftpipe.data.features import TOKENS
from ftpipe.errors import FtpipeError
from ftpipe.hub import resolve_model
from ftpipe.strategies.feature_extraction import PooledClassifier
from ftpipe.strategies.merge import merge_adapter
from ftpipe.tasks import SAFE_LOADING, LabelMap, Task, get_task
from ftpipe.train.model import load_tokenizer_for_export

MANIFEST = "ftpipe.json"
EVAL_KEYS = ("loss", "accuracy", "macro_f1", "perplexity", "ece_raw", "ece_calibrated")


@dataclass(frozen=True)
class Export:
    """An export directory: the one place that knows its layout.

    `write_export` writes it; predict, evaluate and the registry read it through this class,
    so none of them spells a file name or re-reads the config as a raw dict.
    """

    directory: Path

    @classmethod
    def open(cls, directory: str | Path) -> Export:
        """An existing export.

        Raises:
            FtpipeError: If the directory holds no ftpipe export.
        """
        export = cls(Path(directory))
        if not export.manifest_path.is_file():
            raise FtpipeError(
                f"{directory} is not an ftpipe export (no {MANIFEST}). Pass the model/ directory "
                "that `ftpipe train` wrote, or a registry URI such as models:/NAME@champion."
            )
        return export

    @property
    def manifest_path(self) -> Path:
        """ftpipe.json: base model, strategy, task and kind."""
        return self.directory / MANIFEST

    @property
    def config_path(self) -> Path:
        """config.yaml: the resolved config the model was trained with."""
        return self.directory / "config.yaml"

    @property
    def label_map_path(self) -> Path:
        """label_map.json (labelled tasks only)."""
        return self.directory / "label_map.json"

    @property
    def metrics_path(self) -> Path:
        """metrics.json: the exported checkpoint's evaluation."""
        return self.directory / "metrics.json"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest (see the module docstring for the kinds)."""
        return json.loads(self.manifest_path.read_text())

    @property
    def metrics(self) -> dict[str, Any]:
        """The exported checkpoint's evaluation."""
        return json.loads(self.metrics_path.read_text())

    @property
    def task(self) -> Task:
        """The task the model was trained for."""
        return get_task(self.manifest["task"])

    @property
    def kind(self) -> str:
        """transformers, peft or pooled-classifier."""
        return self.manifest["kind"]

    @property
    def temperature(self) -> float:
        """What the logits are divided by before the softmax (1.0: no temperature scaling)."""
        return float(self.manifest.get("temperature", 1.0))

    @property
    def labels(self) -> LabelMap | None:
        """The label map, for labelled tasks."""
        return LabelMap.load(self.label_map_path) if self.task.labelled else None

    @cached_property
    def config(self) -> Config:
        """The resolved config the model was trained with."""
        return validate_config(yaml.safe_load(self.config_path.read_text()), str(self.config_path))


def write_export(
    model: nn.Module,
    config: Config,
    labels: LabelMap | None,
    metrics: dict[str, Any],
    directory: Path,
) -> Path:
    """Write a trained (unsharded) model and everything needed to use it into `directory`."""
    from peft import PeftModel

    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "base_model": config.model.name,
        "base_model_revision": config.model.revision,
        "strategy": config.strategy.name,
        "task": config.data.task,
        **export_temperature(config, metrics),
    }
    if isinstance(model, PooledClassifier):
        model.backbone.save_pretrained(directory)
        head = {k: v.detach().contiguous() for k, v in model.classifier.state_dict().items()}
        save_file(head, str(directory / "head.safetensors"))
        manifest |= {"kind": "pooled-classifier", "pooling": model.pooling}
    elif isinstance(model, PeftModel):
        model.save_pretrained(directory / "adapter")
        # Unset merges where the method allows: prompt learning adds tokens, not weights, and
        # a 4-bit base (qlora) would round the update away.
        merges = not rules_for(config.strategy.name).merge_refusal
        if merges and config.strategy.merge_adapter is not False:
            # Merging replaces the adapter layers in place, so merge a copy: this export may
            # be written mid-training, from the model still being trained.
            merge_adapter(copy.deepcopy(model)).save_pretrained(directory)
            manifest |= {"kind": "transformers"}
        else:
            manifest |= {"kind": "peft"}
        manifest |= {"adapter": "adapter"}
    else:
        model.save_pretrained(directory)
        manifest |= {"kind": "transformers"}
    tokenizer = load_tokenizer_for_export(config)
    if config.data.messages_column is not None:
        # The export carries the template its conversations were rendered with (a shipped one
        # or a .jinja file), so it serves them anywhere as the tokenizer's own.
        tokenizer.chat_template = ChatRenderer(config.model, config.data).template or (
            tokenizer.chat_template
        )
    tokenizer.save_pretrained(directory)
    export = Export(directory)
    if labels is not None:
        labels.save(export.label_map_path)
    export.config_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    export.metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    export.manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (directory / "README.md").write_text(model_card(manifest, config, metrics))
    return directory


def export_temperature(config: Config, metrics: dict[str, Any]) -> dict[str, float]:
    """The manifest's `temperature`: the one the task fit on the eval logits, if it fits one.

    None with `train.train_on_eval`: the eval rows were trained on, and a temperature fit on
    rows the model has seen would make it more confident, not honest (1.0 applies).
    """
    if "temperature" not in metrics or config.train.train_on_eval:
        return {}
    return {"temperature": float(metrics["temperature"])}


def load_export(export: Export) -> tuple[nn.Module, Any]:
    """Load an export (`Export.open(directory)`) for inference: (model in eval mode, tokenizer).

    The model's forward takes tokenizer output and returns an object with `.logits`.
    """
    from transformers import AutoModel, AutoTokenizer

    directory, manifest = export.directory, export.manifest
    if manifest["kind"] == "pooled-classifier":
        backbone = AutoModel.from_pretrained(directory, **SAFE_LOADING)
        head = load_file(str(directory / "head.safetensors"))
        model = PooledClassifier(backbone, manifest["pooling"], head["weight"].shape[0])
        model.classifier.load_state_dict(head)
    elif manifest["kind"] == "peft":
        from peft import PeftModel

        base = export.task.load_model(
            resolve_model(manifest["base_model"]), export.labels,
            revision=manifest["base_model_revision"],
        )  # fmt: skip
        model = PeftModel.from_pretrained(base, directory / manifest["adapter"])
    else:
        model = export.task.load_model(str(directory), None)
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    return model.eval(), tokenizer


@torch.no_grad()
def predict_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits for a batch of token tensors, whatever the export kind."""
    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = {k: v for k, v in batch.items() if k in names}
    return model(**inputs).logits.float()


def head_formula(pooling: str | None) -> str:
    """A pooled-classifier's logits, as the model card writes them (a comment line)."""
    states = "backbone(**inputs).last_hidden_state"
    head = "@ head['weight'].T + head['bias']"
    if pooling == TOKENS:
        return f"# logits = {states} {head}  (each token tagged alone)"
    return f"# logits = {pooling}-pool({states}) {head}"


def model_card(manifest: dict[str, Any], config: Config, metrics: dict[str, Any]) -> str:
    """A short README: what this is, how it was trained, how to load it, what it scored."""
    auto = get_task(manifest["task"]).model_class
    how = {
        "transformers": (
            f"from transformers import {auto}, AutoTokenizer\n"
            f'model = {auto}.from_pretrained("DIR")\n'
            'tokenizer = AutoTokenizer.from_pretrained("DIR")'
        ),
        "peft": (
            "from peft import PeftModel\n"
            f"from transformers import {auto}\n"
            f'base = {auto}.from_pretrained("{manifest["base_model"]}")  # + num_labels=N\n'
            'model = PeftModel.from_pretrained(base, "DIR/adapter")'
        ),
        "pooled-classifier": (
            "from safetensors.torch import load_file\n"
            "from transformers import AutoModel\n"
            'backbone = AutoModel.from_pretrained("DIR")\n'
            'head = load_file("DIR/head.safetensors")  # weight [classes, hidden], bias\n'
            f"{head_formula(manifest.get('pooling'))}\n"
            "# or: from ftpipe.train.export import Export, load_export; model, tok = "
            'load_export(Export.open("DIR"))'
        ),
    }[manifest["kind"]]
    scores = "\n".join(
        f"| {k} | {v:.4f} |"
        for k, v in sorted(metrics.items())
        if k in EVAL_KEYS or k.startswith("f1/")
    )
    held_out = "training data included" if config.train.train_on_eval else "held-out split"
    calibrated = (
        f"Probabilities are softmax(logits / {manifest['temperature']:.4f}): temperature "
        "scaling fit on the eval split (`temperature` in ftpipe.json).\n\n"
        if "temperature" in manifest
        else ""
    )
    return (
        f"# {config.registry.model_name}\n\n"
        f"Fine-tuned by ftpipe from `{manifest['base_model']}` with the "
        f"`{manifest['strategy']}` strategy ({manifest['task']}).\n\n"
        f"## Load\n\n```python\n{how}\n```\n\n{calibrated}"
        f"## Evaluation ({held_out}, step {metrics.get('step')})\n\n"
        f"| metric | value |\n| --- | --- |\n{scores}\n\n"
        "## Training\n\nThe resolved config is in `config.yaml`; labels in `label_map.json`.\n"
    )
