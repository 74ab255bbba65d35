"""Load a config from YAML, apply dotted command-line overrides, validate it.

Every failure becomes a `ConfigError` that names the file and the dotted key and says which
values are accepted, never a traceback.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ftpipe.config.schema import Config
from ftpipe.errors import ConfigError, reason


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply `key.path=value` overrides and validate the result.

    Args:
        path: The YAML file.
        overrides: Dotted overrides such as `data.max_length=64`; values are parsed as YAML.

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: If the file is missing or malformed, or a key or value is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {path} does not exist. Pass an existing YAML file with --config, "
            "for example configs/demo.yaml."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read config file {path}: {reason(exc)}. Pass a UTF-8 YAML file with --config."
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no objects
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"Config file {path} is not valid YAML: {reason(exc)}. Fix the line it names."
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of sections (data, model, ...), "
            f"not a {type(raw).__name__}."
        )
    source = str(path) + (f" with overrides {' '.join(overrides)}" if overrides else "")
    return validate_config(apply_overrides(raw, overrides), source=source)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` override set; values are parsed as YAML."""
    result = copy.deepcopy(raw)
    for override in overrides:
        key, sep, value_text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"Override {override!r} is not of the form key.path=value, "
                "for example data.max_length=64."
            )
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError:
            value = value_text
        node = result
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"Override {override!r} goes inside {where}, which is a value, not a section."
                )
            node = child
        node[parts[-1]] = value
    return result


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a `Config`, turning pydantic errors into one paragraph."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = _describe_errors(exc)
        raise ConfigError(
            f"Invalid config {source}: {'; '.join(problems)}. Fix the file, or override the key "
            "on the command line (key.path=value); `ftpipe config schema` lists every key."
        ) from None


def _describe_errors(exc: ValidationError) -> list[str]:
    """One phrase per dotted path; the alternatives of a union error are merged into one."""
    reasons: dict[str, list[str]] = {}
    inputs: dict[str, Any] = {}
    for error in exc.errors(include_url=False):
        path, parent = _dotted_path(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            reasons.setdefault(_unknown_key(path, parent), [])
        elif kind == "missing":
            reasons.setdefault(f"`{path}` is required", [])
        elif kind == "value_error":
            # Our own validators already name the keys involved and the fix.
            reasons.setdefault(str(error["ctx"]["error"]), [])
        else:
            reasons.setdefault(f"`{path}`", []).append(_lowercase_first(error["msg"]))
            inputs[f"`{path}`"] = error.get("input")
    phrases = []
    for head, alternatives in reasons.items():
        if not alternatives:
            phrases.append(head)
            continue
        got = inputs[head]
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        phrases.append(f"{head}: {' or '.join(dict.fromkeys(alternatives))}{shown}")
    return phrases


def _dotted_path(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Map a pydantic error location to a dotted config path.

    Pydantic adds the member name of a union (`str`, `int`, ...) to the location; those parts
    are skipped because they are not keys the user wrote. Also returns the model that holds
    the last key, so unknown keys can be matched against the accepted ones.
    """
    parts: list[str] = []
    model: type[BaseModel] | None = Config
    parent: type[BaseModel] | None = Config
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                parts.append(str(item))
            continue
        if model is None:
            if not parts or item.split("[")[0] in _UNION_TAGS:
                continue
            parts.append(item)
            continue
        parts.append(item)
        parent = model
        field = model.model_fields.get(item)
        annotation = field.annotation if field else None
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
    return ".".join(parts) or "(top level)", parent


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "literal", "function-after"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unknown_key(path: str, parent: type[BaseModel] | None) -> str:
    key = path.rsplit(".", 1)[-1]
    accepted = sorted(parent.model_fields) if parent else []
    message = f"unknown key `{path}`"
    close = difflib.get_close_matches(key, accepted, n=1)
    if close:
        message += f" (did you mean `{close[0]}`?)"
    if accepted:
        section = path.rsplit(".", 1)[0] if "." in path else "the top level"
        message += f"; accepted keys in {section}: {', '.join(accepted)}"
    return message


def _lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]
