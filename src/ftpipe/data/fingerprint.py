"""The data fingerprint: identity of the prepared data, for caching and lineage.

It is a sha256 over the raw bytes of every input (train, and eval and test when they are
files) plus everything in the config that changes what prep writes: the data section (less
where it is written), the seed that drives the splits, the full tokenizer definition, and the
version of the task's prepared layout once it has changed (`Task.prep_layout`).
Same inputs, same fingerprint.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ftpipe.config.schema import Config, canonical_json
from ftpipe.tasks import get_task

IGNORED_DATA_KEYS = ("train", "eval", "test", "output_dir", "min_rows_per_class", "packing")
"""Data keys that change no output: `train`, `eval`, `test` and `output_dir` name places (the
inputs count by their bytes instead), `min_rows_per_class` only sets when prep warns, and
`packing` how training batches the prepared rows."""

COVERED_WHEN_SET = {
    "test_fraction": 0.0,
    "tag_column": None,
    "repair_spans": True,
    "stride": 16,
    "label_all_subwords": False,
    "messages_column": None,
    "chat_template": "auto",
    "instruction_column": None,
    "input_column": "input",
    "train_on": "auto",
}
"""Data keys added after fingerprints were first recorded, with their defaults: the identity
covers one only when it differs from its default, so data prepared without it keeps its
fingerprint."""


def prep_identity(
    config: Config,
    digests: dict[str, str],
    tokenizer_sha256: str,
    chat_template_sha256: str | None = None,
) -> dict[str, Any]:
    """Everything the fingerprint covers, as a JSON-ready mapping (written to fingerprint.json).

    For conversations, the chat template's digest too (`ftpipe.data.chats.template_digest`):
    a template changes the rows, and it lives outside the tokenizer's definition.
    """
    data = config.data.model_dump(mode="json", exclude=set(IGNORED_DATA_KEYS))
    for key, default in COVERED_WHEN_SET.items():
        if data[key] == default:
            del data[key]
    layout = get_task(config.data.task).prep_layout
    return {
        **({"layout": layout} if layout > 1 else {}),  # version 1 predates the key
        "inputs": {
            role: {"source": getattr(config.data, role), "sha256": digest}
            for role, digest in digests.items()
        },
        "data": data,
        "seed": config.seed,
        "model": {"name": config.model.name, "revision": config.model.revision},
        "tokenizer_sha256": tokenizer_sha256,
        **({"chat_template_sha256": chat_template_sha256} if chat_template_sha256 else {}),
    }


def fingerprint(identity: dict[str, Any]) -> str:
    """sha256 of the identity's canonical JSON; input paths are left out, their bytes count."""
    content = dict(identity)
    content["inputs"] = {role: entry["sha256"] for role, entry in identity["inputs"].items()}
    content.pop("model")  # the tokenizer digest already covers what the model changes here
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()
