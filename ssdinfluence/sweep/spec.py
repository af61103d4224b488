"""A sweep's spec and its expansion into trials (every trial checked before anything runs)."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import FIELDS, Config, build_config, merge

# Fields a spec may not set: the sweep owns run directories and seeds, the backend owns threads.
RESERVED = {"out": "the sweep sets each trial's run directory", "seed": "use the seeds axis",
            "threads": "the backend sets threads per trial (--threads-per-trial)"}
SPEC_KEYS = ("name", "preset", "base", "grid", "random", "seeds", "models")


@dataclass
class SweepSpec:
    """What to run: ``base`` values for every trial, ``grid`` axes (lists, cartesian product),
    ``random`` axes (``{low, high, log, type}`` ranges or lists of choices; ``samples`` draws
    from an RNG seeded with ``rng_seed``, the same draws for every grid point), ``seeds``,
    ``preset`` (``"paper"``: the paper's values for each trial's env and model, under
    ``base``). Trial values: preset < base < axes < seed."""

    name: str = ""
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    random: dict = field(default_factory=dict)
    samples: int = 1
    rng_seed: int = 0
    seeds: list = field(default_factory=lambda: [0])
    preset: str | None = None

    @classmethod
    def from_dict(cls, values: dict) -> SweepSpec:
        """Parse the TOML/JSON layout (``name``, ``preset``, ``[base]``, ``[grid]``, ``[random]``
        with ``samples`` and ``rng_seed``, ``seeds = N | [..]`` or ``[seeds] count | values``,
        ``models = [..]`` as a shortcut for ``grid.model``); ValueError naming what is wrong."""
        unknown = sorted(set(values) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"unknown sweep keys {unknown}; known: {list(SPEC_KEYS)}")
        tables = {}
        for key in ("base", "grid", "random"):
            tables[key] = values.get(key, {})
            if not isinstance(tables[key], dict):
                raise ValueError(f"[{key}] must be a table of options, got {tables[key]!r}")
        grid = dict(tables["grid"])
        if "models" in values:
            if "model" in grid:
                raise ValueError("give the models either as models = [...] or in [grid], not both")
            grid = {"model": values["models"], **grid}
        random = dict(tables["random"])
        samples, rng_seed = random.pop("samples", 1), random.pop("rng_seed", 0)
        preset = values.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise ValueError(f"preset must be a string, got {preset!r}")
        spec = cls(name=str(values.get("name", "")), base=dict(tables["base"]), grid=grid, random=random,
                   samples=samples, rng_seed=rng_seed, seeds=_parse_seeds(values.get("seeds", 1)), preset=preset)
        spec.check()
        return spec

    def to_dict(self) -> dict:
        """The layout :meth:`from_dict` reads (written to ``sweep.json``)."""
        random = {"samples": self.samples, "rng_seed": self.rng_seed, **self.random} if self.random else {}
        return {"name": self.name, "preset": self.preset, "base": self.base, "grid": self.grid, "random": random,
                "seeds": list(self.seeds)}

    def check(self) -> None:
        """Layout checks (types, reserved and duplicated keys, axis shapes); ValueError."""
        for where, table in (("base", self.base), ("grid", self.grid), ("random", self.random)):
            for key in table:
                if key in RESERVED:
                    raise ValueError(f"[{where}] sets {key!r}: {RESERVED[key]}")
                if key not in FIELDS:
                    raise ValueError(f"[{where}] has unknown option {key!r}; options are the Config fields")
        for key in set(self.base) & (set(self.grid) | set(self.random)) | set(self.grid) & set(self.random):
            raise ValueError(f"{key!r} is given in more than one of [base], [grid], [random]")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid axis {key!r} must be a non-empty list, got {values!r}")
            if len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
                raise ValueError(f"grid axis {key!r} repeats a value: {values!r}")
        for key, axis in self.random.items():
            _check_random_axis(key, axis)
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"random samples must be an integer >= 1, got {self.samples!r}")
        if isinstance(self.rng_seed, bool) or not isinstance(self.rng_seed, int) or self.rng_seed < 0:
            raise ValueError(f"random rng_seed must be an integer >= 0, got {self.rng_seed!r}")


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: ``values`` are the Config fields it sets (``out``, ``threads`` aside)."""

    id: str
    values: dict
    env: str
    model: str
    seed: int
    steps: int

    @property
    def run_dir(self) -> str:
        """Relative to the sweep directory."""
        return f"runs/{self.id}"


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep TOML file; ValueError naming the file and the problem."""
    import tomllib

    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read sweep file {path}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep file {path} is not valid TOML: {error}") from error
    try:
        return SweepSpec.from_dict(values)
    except ValueError as error:
        raise ValueError(f"sweep file {path}: {error}") from error


def read_spec(sweep_dir: str | Path) -> SweepSpec:
    """The spec saved in an existing sweep directory; ValueError if it has none."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.exists():
        raise ValueError(f"{sweep_dir} is not a sweep directory (no sweep.json)")
    return SweepSpec.from_dict(json.loads(path.read_text()))


def expand(spec: SweepSpec) -> list[Trial]:
    """All trials, in a stable order (grid axes as given, then random draws, seeds innermost),
    each validated with ``build_config``; ValueError naming the trial and the option.

    Ids are ``ENV-MODEL[-AXIS VALUE...][-rK]-sSEED`` with only the grid axes that vary; ``rK``
    is random draw K. Random draws are the same for every grid point."""
    spec.check()
    rng = np.random.default_rng(spec.rng_seed)
    draws = [{key: _draw(rng, axis) for key, axis in spec.random.items()} for _ in range(spec.samples)]
    draws = draws if spec.random else [{}]  # samples only count with random axes
    axes = list(spec.grid.items())
    varying = [key for key, values in axes if len(values) > 1 and key not in ("env", "model")]
    trials, seen = [], {}
    for point in itertools.product(*(values for _, values in axes)):
        grid_values = dict(zip((key for key, _ in axes), point, strict=True))
        for k, drawn in enumerate(draws):
            for seed in spec.seeds:
                # preset < base < axes < seed; check() keeps the layers' keys apart, so no table merges here
                values = merge(spec.base, grid_values, drawn, {"seed": seed}, preset=spec.preset)
                env, model = values.get("env", Config.env), values.get("model", Config.model)
                parts = [str(env), str(model), *(_id_part(key, grid_values[key]) for key in varying)]
                parts += [f"r{k}"] * bool(spec.random) + [f"s{seed}"]
                trial_id = re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))
                try:
                    config = build_config(values)
                except ValueError as error:
                    raise ValueError(f"trial {trial_id}: {error}") from error
                if trial_id in seen:
                    raise ValueError(f"trials {seen[trial_id]} and {values} get the same id {trial_id}; "
                                     f"make the grid values differ in their first 6 significant digits")
                seen[trial_id] = values
                trials.append(Trial(trial_id, values, config.env, config.model, seed, config.steps))
    return trials


def _parse_seeds(value) -> list[int]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"count", "values"})
        if unknown or len(value) != 1:
            raise ValueError(f"[seeds] takes one of count = N or values = [...], got {value!r}")
        value = value.get("count", value.get("values"))
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"seeds count must be >= 1, got {value}")
        return list(range(value))
    if (isinstance(value, list) and value and len(set(value)) == len(value)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        return list(value)
    raise ValueError(f"seeds must be a count >= 1 or a list of distinct integers >= 0, got {value!r}")


def _check_random_axis(key: str, axis) -> None:
    if isinstance(axis, list):
        if not axis:
            raise ValueError(f"random axis {key!r} has no choices")
        return
    if not isinstance(axis, dict):
        raise ValueError(f"random axis {key!r} must be a list of choices or {{low, high, log, type}}, got {axis!r}")
    unknown = sorted(set(axis) - {"low", "high", "log", "type"})
    if unknown:
        raise ValueError(f"random axis {key!r} has unknown keys {unknown}; use low, high, log, type")
    low, high = axis.get("low"), axis.get("high")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (low, high)) or not low < high:
        raise ValueError(f"random axis {key!r} needs numbers low < high, got low={low!r}, high={high!r}")
    if not isinstance(axis.get("log", False), bool):
        raise ValueError(f"random axis {key!r}: log must be true or false")
    if axis.get("log") and low <= 0:
        raise ValueError(f"random axis {key!r}: a log range needs low > 0, got {low}")
    if axis.get("type", "float") not in ("float", "int"):
        raise ValueError(f"random axis {key!r}: type must be float or int, got {axis.get('type')!r}")


def _draw(rng: np.random.Generator, axis):
    """One value of a random axis (choices: uniform; ranges: uniform or log-uniform, int ranges
    inclusive of both ends)."""
    if isinstance(axis, list):
        return axis[int(rng.integers(len(axis)))]
    low, high, log, is_int = axis["low"], axis["high"], axis.get("log", False), axis.get("type") == "int"
    top = high + 1 if is_int else high  # ints: floor of a draw over [low, high + 1)
    x = math.exp(rng.uniform(math.log(low), math.log(top))) if log else rng.uniform(low, top)
    return min(int(math.floor(x)), int(high)) if is_int else float(x)


def _id_part(key: str, value) -> str:
    if isinstance(value, bool):
        return f"{key}-{'on' if value else 'off'}"
    if isinstance(value, float):
        return f"{key}{value:g}"
    if isinstance(value, int):
        return f"{key}{value}"
    if isinstance(value, dict):
        return "-".join([key, *(f"{k}{v}" for k, v in value.items())])
    return f"{key}-{value}"
