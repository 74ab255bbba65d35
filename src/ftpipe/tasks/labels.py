"""The label map: one stable id <-> name mapping per dataset, saved as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelMap:
    """Label names in id order; id i is `names[i]`."""

    names: tuple[str, ...]

    @classmethod
    def build(cls, declared: Sequence[str] | None, observed: list[str]) -> LabelMap:
        """Use the declared order, else sort the observed labels.

        Integer labels sort numerically (so "0".."9", "10" keep their ids) and strings
        alphabetically, which keeps ids stable across runs on the same label set. Declare
        `data.labels` to keep ids fixed when classes are added later.
        """
        if declared is not None:
            return cls(tuple(declared))
        unique = set(observed)
        if all(_is_int(name) for name in unique):
            return cls(tuple(sorted(unique, key=int)))
        return cls(tuple(sorted(unique)))

    @property
    def label2id(self) -> dict[str, int]:
        """Name to id."""
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, labels: list[str]) -> list[int]:
        """Map names to ids."""
        ids = self.label2id
        return [ids[name] for name in labels]

    def to_json(self) -> dict[str, dict[str, int | str]]:
        """The transformers-style `id2label` / `label2id` pair."""
        return {
            "id2label": {str(i): name for i, name in enumerate(self.names)},
            "label2id": dict(self.label2id),
        }

    def save(self, path: Path) -> None:
        """Write label_map.json."""
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        """Read a label_map.json written by `save`."""
        id2label = json.loads(path.read_text())["id2label"]
        return cls(tuple(id2label[str(i)] for i in range(len(id2label))))


def _is_int(name: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", name) is not None
