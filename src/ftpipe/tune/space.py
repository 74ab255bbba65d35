"""The search space: dotted config paths to samplers, parsed and validated like the config.

Written in the config (or suggested by `ftpipe recommend`) as strings:

    tune:
      search_space:
        train.lr: loguniform(1e-5, 5e-4)
        strategy.freeze_layers: choice([0, 2, 4])
        strategy.name: choice([lora, freeze, full])

Samplers: `loguniform(low, high)`, `uniform(low, high)`, `randint(low, high)` (high
exclusive) and `choice([...])`. Every path must be a config key and every value the sampler can
produce must validate there, so a typo or an out-of-range bound fails before any trial starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from ftpipe.config.load import apply_overrides, validate_config
from ftpipe.config.schema import Config
from ftpipe.errors import ConfigError

SAMPLERS = ("loguniform", "uniform", "randint", "choice")
_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Sampler:
    """One parsed sampler: its kind and arguments (bounds, or the choices)."""

    kind: str
    args: tuple[Any, ...]

    def edge_values(self) -> list[Any]:
        """Values that must all be valid config values: the bounds, or every choice."""
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)

    def to_tune(self, grid: bool) -> Any:
        """The Ray Tune domain (a grid over choices when `grid`)."""
        from ray import tune

        if self.kind == "choice":
            return tune.grid_search(list(self.args)) if grid else tune.choice(list(self.args))
        return {"loguniform": tune.loguniform, "uniform": tune.uniform,
                "randint": tune.randint}[self.kind](*self.args)  # fmt: skip


def parse_space(config: Config, space: dict[str, str], grid: bool = False) -> dict[str, Sampler]:
    """Parse and validate `tune.search_space` (or a suggested space) against the config.

    Raises:
        ConfigError: On an unknown sampler, bad bounds, an unknown path, or a value the path
            does not accept; the message names `tune.search_space.<path>`.
    """
    if not space:
        raise ConfigError(
            "tune.search_space is empty and there is no recommendation to take one from. Run "
            "`ftpipe recommend` first, or set tune.search_space, for example "
            "{train.lr: 'loguniform(1e-5, 5e-4)'}."
        )
    parsed = {path: _parse(path, text) for path, text in space.items()}
    base = config.model_dump(mode="json")
    for path, sampler in parsed.items():
        where = f"tune.search_space.{path}"
        if grid and sampler.kind != "choice":
            raise ConfigError(
                f"{where} is {space[path]!r}, but tune.search=grid needs choice([...]) for every "
                "path. List the values to try, or use tune.search=random or optuna."
            )
        for value in sampler.edge_values():
            try:
                validate_config(apply_overrides(base, [f"{path}={yaml.safe_dump(value).strip()}"]))
            except ConfigError as exc:
                raise ConfigError(
                    f"{where} can produce {value!r}, which the config does not accept: "
                    f"{str(exc).removeprefix('Invalid config config: ')}"
                ) from None
    return parsed


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string; people mean the number."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _parse(path: str, text: str) -> Sampler:
    where = f"tune.search_space.{path}"
    match = _CALL.match(str(text))
    if not match or match.group(1) not in SAMPLERS:
        raise ConfigError(
            f"{where} is {text!r}; write one of {', '.join(s + '(...)' for s in SAMPLERS)}, "
            "for example loguniform(1e-5, 5e-4) or choice([0, 2, 4])."
        )
    kind = match.group(1)
    try:
        args = _numbers(yaml.safe_load(f"[{match.group(2)}]"))
    except yaml.YAMLError:
        args = None
    if kind == "choice":
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], list)):
            raise ConfigError(f"{where} is {text!r}; write choice([a, b, ...]) with a list.")
        if not args[0]:
            raise ConfigError(f"{where} is {text!r}; choice needs at least one value.")
        return Sampler(kind, tuple(args[0]))
    numbers = isinstance(args, list) and len(args) == 2
    if not numbers or not all(isinstance(a, (int, float)) for a in args):
        raise ConfigError(f"{where} is {text!r}; {kind} takes two numbers: {kind}(low, high).")
    low, high = args
    if not low < high or (kind == "loguniform" and low <= 0):
        need = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ConfigError(f"{where} is {text!r}; {kind} needs {need}.")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where} is {text!r}; randint takes integers.")
    return Sampler(kind, (low, high))
