"""Multi-seed sweeps: a spec expands to trials, each a normal training run, run in parallel.

A spec (:class:`SweepSpec`, from a TOML file or built in code) holds base options (any
:class:`~ssdinfluence.config.Config` field), grid axes (cartesian product), random axes
(``samples`` draws from a seeded RNG, so expansion is deterministic) and seeds. Every trial's
values are checked with :func:`~ssdinfluence.config.build_config` before anything runs.

Sweep directory::

    SWEEP_DIR/sweep.json      the spec of the first run, as given
    SWEEP_DIR/manifest.json   one record per trial (see :func:`load_manifest`)
    SWEEP_DIR/runs/<id>/      the trial's run directory (config.json, metrics.csv, checkpoint.pt, ...)

Only the driver (the process calling :func:`run_sweep`) writes the manifest, atomically, as
trials report. Re-running the same spec into the same directory skips finished trials and
resumes the others from their checkpoints (failed ones are tried again); a different spec is
refused. Backends: ``local`` (a pool of spawned processes on this machine) and ``ray`` (tasks
on a Ray cluster; the sweep directory must then be on a filesystem every node mounts at the
same path, and ssdinfluence installed on every node).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import FIELDS, Config, build_config, preset_values

STATUSES = ("pending", "running", "finished", "failed", "interrupted")
MANIFEST_FORMAT = "ssdinfluence-sweep-manifest"
MANIFEST_VERSION = 1
# Fields a spec may not set: the sweep owns run directories and seeds, the backend owns threads.
RESERVED = {"out": "the sweep sets each trial's run directory", "seed": "use the seeds axis",
            "threads": "the backend sets threads per trial (--threads-per-trial)"}
SPEC_KEYS = ("name", "preset", "base", "grid", "random", "seeds", "models")
ERROR_CHARS = 4000  # tail of a failed trial's traceback kept in the manifest
POLL_S = 1.0
SAVE_EVERY_S = 5.0  # progress-only manifest updates are throttled to this interval


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
                given = _coerce({**spec.base, **grid_values, **drawn, "seed": seed})
                env, model = given.get("env", Config.env), given.get("model", Config.model)
                values = {**_preset(spec.preset, env, model), **given}
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


def plan(sweep_dir: str | Path, trials: list[Trial]) -> list[dict]:
    """The manifest records for ``trials``: the saved ones if ``sweep_dir`` holds this sweep,
    new pending ones if it holds none; ValueError if it holds a different sweep. Writes nothing."""
    saved = _read_manifest(Path(sweep_dir))
    if saved is None:
        return [_new_record(trial) for trial in trials]
    old = {r["id"]: _canonical(r["overrides"]) for r in saved}
    new = {t.id: _canonical(t.values) for t in trials}
    if old != new:
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        changed = sorted(k for k in set(new) & set(old) if new[k] != old[k])
        raise ValueError(
            f"{sweep_dir} holds a different sweep (trials added: {added[:3] or 'none'}, removed: "
            f"{removed[:3] or 'none'}, changed: {changed[:3] or 'none'}); continue it with its own spec "
            f"(ssdinfluence sweep --resume {sweep_dir}) or choose another --out")
    order = {t.id: i for i, t in enumerate(trials)}
    return sorted(saved, key=lambda r: order[r["id"]])


def load_manifest(sweep_dir: str | Path) -> list[dict]:
    """The trial records of a sweep, in expansion order; ValueError if there is no manifest.

    Each record: ``id``; ``run_dir`` (relative to the sweep directory); ``env``, ``model``,
    ``seed``; ``overrides`` (the Config fields the trial sets); ``total_steps`` (its ``steps``);
    ``status`` (one of :data:`STATUSES`: pending | running | finished | failed | interrupted);
    ``attempts`` (times started); ``error`` (tail of the last failure's traceback, else None);
    ``started``, ``ended`` (ISO 8601 UTC of the last attempt, or None); ``env_steps`` (reached:
    from its checkpoint once it ended, what a resume starts from; from metrics.csv while
    running); ``collective_return`` (the last finite value in metrics.csv, or None); ``eta_s``
    (while running, else None); ``duration_s`` (wall time summed over attempts).
    """
    records = _read_manifest(Path(sweep_dir))
    if records is None:
        raise ValueError(f"{sweep_dir} has no manifest.json: not a sweep directory")
    return records


def trial_run_dirs(sweep_dir: str | Path, status: tuple[str, ...] = ("finished",)) -> list[Path]:
    """Run directories (absolute) of the trials whose status is in ``status``."""
    root = Path(sweep_dir).resolve()
    return [root / r["run_dir"] for r in load_manifest(sweep_dir) if r["status"] in status]


def run_trial(run_dir: str, values: dict, threads: int, track: dict | None = None) -> dict:
    """Train one trial in ``run_dir`` to its full step count: skipped when its checkpoint is
    already there, resumed from a partial one. Never raises for the trial's own errors.
    ``track``: ``{"kind": "tensorboard" | "wandb", "project": str}`` to track the trial's updates.

    Returns ``{"status": finished | interrupted | failed, "env_steps": int | None, "error":
    str | None, "duration_s": float}``; a first SIGINT/SIGTERM stops it after the current
    update with a checkpoint (the trainer's own handling), giving ``interrupted``.
    """
    from .tracking import open_tracker
    from .train import train

    start = time.perf_counter()
    outcome = {"status": "failed", "env_steps": None, "error": None}
    try:
        config = build_config({**values, "out": run_dir, "threads": threads})
        done = _checkpoint_steps(run_dir)
        if done is not None and done >= config.steps:
            outcome.update(status="finished", env_steps=done)
        else:
            tracker = open_tracker(track["kind"], config, project=track["project"]) if track else None
            try:
                result = train(config, resume=done is not None, on_update=tracker.log if tracker else None)
            finally:
                if tracker:
                    tracker.close()
            outcome.update(status="interrupted" if result.stopped_early else "finished", env_steps=result.env_steps)
    except KeyboardInterrupt:  # a second Ctrl-C, or a stop that came before the trainer's handler
        outcome.update(status="interrupted", env_steps=_checkpoint_steps_or_none(run_dir))
    except Exception:
        outcome.update(error=traceback.format_exc()[-ERROR_CHARS:], env_steps=_checkpoint_steps_or_none(run_dir))
    outcome["duration_s"] = round(time.perf_counter() - start, 3)
    return outcome


def run_sweep(sweep_dir: str | Path, spec: SweepSpec, *, backend: str = "local", workers: int | None = None,
              threads_per_trial: int | None = None, ray_address: str | None = None, cpus_per_trial: int = 1,
              gpus_per_trial: float = 0.0, on_progress=None, track: dict | None = None) -> list[dict]:
    """Run every trial of ``spec`` that is not finished yet; return the final manifest records.

    ``local``: at most ``workers`` (default: min(trials to run, cores)) trials at once in spawned
    processes, each with ``threads_per_trial`` threads (default: cores // workers, at least 1).
    ``ray``: one task per trial with ``cpus_per_trial`` CPUs (also its thread count) and
    ``gpus_per_trial`` GPUs (a fraction shares one); connects to ``ray_address`` (default: the
    running instance of this process, else a new local one); ``workers`` caps the trials in
    flight (default: all, Ray queues them). ``on_progress(records)`` is called about once a
    second and whenever a trial changes state. A first SIGINT/SIGTERM stops the running trials
    after their current update (checkpointed, ``interrupted``) and starts no new ones; a second
    SIGINT aborts at once. ValueError for a bad spec or a sweep directory holding another sweep.
    ``track`` is passed to every trial's :func:`run_trial`.
    """
    root = Path(sweep_dir).resolve()
    trials = expand(spec)
    root.mkdir(parents=True, exist_ok=True)
    with _driver_lock(root):
        records = plan(root, trials)
        by_id = {r["id"]: r for r in records}
        for r in records:
            if r["status"] == "running":  # a driver that died without recording the end
                r["status"] = "interrupted"
            if r["status"] == "finished" and not (root / r["run_dir"] / "checkpoint.pt").exists():
                r["status"] = "pending"  # its run directory was removed: run it again
        todo = [t for t in trials if by_id[t.id]["status"] != "finished"]
        if not (root / "sweep.json").exists():
            _write_json(root / "sweep.json", spec.to_dict())
        manifest = _Manifest(root, records)
        manifest.save()
        if todo:
            runner = _make_backend(backend, len(todo), workers, threads_per_trial, ray_address, cpus_per_trial,
                                   gpus_per_trial, track)
            try:
                _drive(runner, root, todo, by_id, manifest, on_progress)
            finally:
                runner.close()
    return records


def _drive(runner, root: Path, todo: list[Trial], by_id: dict, manifest: _Manifest, on_progress) -> None:
    """Submit trials as the backend has room, record what they report, until all are done or a
    stop is asked for."""
    from .train import stop_on_signals

    in_flight = {}  # backend handle -> record
    config_mtime = {}  # trial id -> mtime of its config.json when submitted (None: absent)
    started = set()  # ids whose attempt has been counted
    stopping = False
    try:
        with stop_on_signals() as stop:
            while (todo and not stopping) or in_flight:
                if stop["stop"] and not stopping:
                    stopping = True
                    runner.stop(list(in_flight))
                while todo and not stopping and len(in_flight) < runner.capacity:
                    trial = todo.pop(0)
                    run_dir = root / trial.run_dir
                    config_mtime[trial.id] = _mtime(run_dir / "config.json")
                    in_flight[runner.submit(str(run_dir), trial.values)] = by_id[trial.id]
                for handle, outcome in runner.wait(list(in_flight), POLL_S):
                    record = in_flight.pop(handle)
                    if outcome["status"] == "cancelled":  # by a stop, before or while it ran
                        outcome["status"] = "interrupted" if record["id"] in started else "pending"
                    if outcome["status"] != "pending":  # "pending": stopped before it began
                        _record_start(record, started, time.time() - outcome["duration_s"])
                        _record_end(record, outcome, root)
                    manifest.changed(status=True)
                for record in in_flight.values():
                    run_dir = root / record["run_dir"]
                    if record["id"] not in started and _mtime(run_dir / "config.json") != config_mtime[record["id"]]:
                        _record_start(record, started, time.time())  # the trainer writes config.json first
                        manifest.changed(status=True)
                    if record["id"] in started:
                        manifest.changed(status=False, updated=_record_progress(record, run_dir, running=True))
                manifest.maybe_save()
                if on_progress:
                    on_progress(manifest.records)
    finally:
        if in_flight:  # only on an abort (a second Ctrl-C, an error in the driver)
            runner.stop(list(in_flight))
        for record in in_flight.values():
            record["status"] = "interrupted" if record["id"] in started else "pending"
        manifest.save()
    if on_progress:
        on_progress(manifest.records)


@contextmanager
def _driver_lock(root: Path):
    """One driver per sweep directory: two would train the same trial into one run directory."""
    import fcntl

    with open(root / "sweep.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise ValueError(f"another sweep is running in {root} (it holds {root / 'sweep.lock'})") from error
        yield  # the lock goes with the file's closing


# --- spec helpers -------------------------------------------------------------------------

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


def _coerce(values: dict) -> dict:
    """TOML writes ``steps = 5e6`` as a float: integral floats become ints for int fields."""
    out = {}
    for key, value in values.items():
        default = FIELDS[key].default
        if (isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)
                and value.is_integer()):
            value = int(value)
        out[key] = value
    return out


def _preset(name: str | None, env: str, model: str) -> dict:
    if name is None:
        return {}
    try:
        return preset_values(name, env, model)
    except KeyError:  # unknown env or model: build_config names it
        return {}


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


def _canonical(values: dict) -> str:
    return json.dumps(values, sort_keys=True)


# --- manifest -----------------------------------------------------------------------------

def _new_record(trial: Trial) -> dict:
    return {"id": trial.id, "run_dir": trial.run_dir, "env": trial.env, "model": trial.model, "seed": trial.seed,
            "overrides": trial.values, "total_steps": trial.steps, "status": "pending", "attempts": 0,
            "error": None, "started": None, "ended": None, "env_steps": 0, "collective_return": None,
            "eta_s": None, "duration_s": 0.0}


def _read_manifest(root: Path) -> list[dict] | None:
    path = root / "manifest.json"
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    if payload.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an ssdinfluence sweep manifest")
    return payload["trials"]


def _write_json(path: Path, payload) -> None:
    """Atomic: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


class _Manifest:
    """Saves the records at once after a state change, at most every SAVE_EVERY_S for progress."""

    def __init__(self, root: Path, records: list[dict]):
        self.root, self.records = root, records
        self.dirty, self.urgent, self.saved_at = False, False, 0.0

    def changed(self, status: bool, updated: bool = True) -> None:
        self.dirty |= updated
        self.urgent |= status

    def maybe_save(self) -> None:
        if self.urgent or (self.dirty and time.monotonic() - self.saved_at >= SAVE_EVERY_S):
            self.save()

    def save(self) -> None:
        _write_json(self.root / "manifest.json", {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "updated": _now(), "trials": self.records})
        self.dirty = self.urgent = False
        self.saved_at = time.monotonic()


def _record_start(record: dict, started: set, when: float) -> None:
    if record["id"] in started:
        return
    started.add(record["id"])
    record.update(status="running", attempts=record["attempts"] + 1, started=_now(when), ended=None, eta_s=None)


def _record_end(record: dict, outcome: dict, root: Path) -> None:
    record.update(status=outcome["status"], ended=_now(), eta_s=None,
                  duration_s=round(record["duration_s"] + outcome["duration_s"], 3))
    record["error"] = outcome["error"] if outcome["status"] == "failed" else None
    run_dir = root / record["run_dir"]
    _record_progress(record, run_dir, running=False)
    # what a resume starts from: metrics.csv may have rows after the last checkpoint
    steps = outcome["env_steps"] if outcome["env_steps"] is not None else _checkpoint_steps_or_none(run_dir)
    record["env_steps"] = steps or 0


def _record_progress(record: dict, run_dir: Path, running: bool) -> bool:
    """Update env_steps, collective_return (and eta_s while running) from metrics.csv; True if
    anything changed."""
    row, collective = _metrics_tail(run_dir / "metrics.csv")
    if row is None:
        return False
    before = (record["env_steps"], record["collective_return"], record["eta_s"])
    record["env_steps"] = int(row["env_steps"])
    record["collective_return"] = collective
    sps = float(row["sps"] or 0)
    remaining = max(record["total_steps"] - record["env_steps"], 0)
    record["eta_s"] = round(remaining / sps, 1) if running and sps > 0 else None
    return before != (record["env_steps"], record["collective_return"], record["eta_s"])


def _metrics_tail(path: Path, tail_bytes: int = 65536) -> tuple[dict | None, float | None]:
    """The last row of a metrics.csv and its last finite collective return (episodes end only
    every few updates), reading only the header and the file's tail."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode()
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - tail_bytes, len(header)))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None, None
    if size > len(header) + tail_bytes:
        lines = lines[1:]  # the first line of the tail may be cut
    rows = [r for r in csv.DictReader([header, *[line for line in lines if line]])
            if r.get("env_steps") not in (None, "")]  # a row being written may be incomplete
    if not rows:
        return None, None
    finite = [float(r["collective_return"]) for r in rows
              if r.get("collective_return") not in (None, "") and math.isfinite(float(r["collective_return"]))]
    return rows[-1], finite[-1] if finite else None


def _checkpoint_steps(run_dir: str | Path) -> int | None:
    """Env steps of the run's checkpoint, None if it has none (CheckpointError if unreadable)."""
    from . import checkpoint

    path = Path(run_dir) / "checkpoint.pt"
    return int(checkpoint.load(path)["env_steps"]) if path.exists() else None


def _checkpoint_steps_or_none(run_dir: str | Path) -> int | None:
    try:
        return _checkpoint_steps(run_dir)
    except Exception:  # reporting a failure must not fail on a bad checkpoint
        return None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _now(when: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if when is None else when, timezone.utc)
    return moment.isoformat(timespec="seconds")


# --- backends -----------------------------------------------------------------------------

def _make_backend(name, todo, workers, threads_per_trial, ray_address, cpus_per_trial, gpus_per_trial, track):
    if name == "local":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = workers or min(todo, cores)
        return _LocalBackend(workers, threads_per_trial or max(1, cores // workers), track)
    if name == "ray":
        return _RayBackend(ray_address, workers or todo, threads_per_trial or cpus_per_trial, cpus_per_trial,
                           gpus_per_trial, track)
    raise ValueError(f"unknown backend {name!r}; use local or ray")


_STOP_EVENT = None  # in a local worker: set by the driver to stop its trials


def _init_local_worker(stop_event) -> None:
    """Runs first in every local worker. A Ctrl-C in a terminal reaches the whole process group:
    an idle worker ignores it (the trainer installs its own handler while training), and a stop
    asked for by the driver is relayed to the trainer as a SIGTERM."""
    global _STOP_EVENT
    _STOP_EVENT = stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_relay_stop, args=(stop_event,), daemon=True).start()


def _relay_stop(stop_event) -> None:
    """Once the driver asks, keep simulating SIGTERM in the main thread: it only has an effect
    while the trainer's handler is installed (``interrupt_main`` does nothing for SIG_DFL), and
    repeating it catches a trial that was still setting up when the stop came."""
    import _thread

    stop_event.wait()
    while True:
        _thread.interrupt_main(signal.SIGTERM)
        time.sleep(0.5)


def _local_trial(run_dir: str, values: dict, threads: int, track: dict | None) -> dict:
    if _STOP_EVENT is not None and _STOP_EVENT.is_set():
        return {"status": "pending", "env_steps": None, "error": None, "duration_s": 0.0}
    return run_trial(run_dir, values, threads, track)


class _LocalBackend:
    """Trials in a pool of spawned processes (fork is unsafe once torch and Numba run threads)."""

    def __init__(self, workers: int, threads: int, track: dict | None):
        import multiprocessing

        self.capacity, self.threads, self.track = workers, threads, track
        self.context = multiprocessing.get_context("spawn")
        self.stop_event = self.context.Event()
        self.executor = None

    def submit(self, run_dir: str, values: dict):
        from concurrent.futures import ProcessPoolExecutor

        if self.executor is None:  # first use, or the last pool broke (a worker died)
            self.executor = ProcessPoolExecutor(self.capacity, mp_context=self.context,
                                                initializer=_init_local_worker, initargs=(self.stop_event,))
        return self.executor.submit(_local_trial, run_dir, values, self.threads, self.track)

    def wait(self, handles: list, timeout: float) -> list[tuple]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        results = []
        for future in done:
            try:
                results.append((future, future.result()))
            except BrokenProcessPool as error:  # every trial in flight fails with it
                if self.executor is not None:
                    self.executor.shutdown(wait=False)
                    self.executor = None
                results.append((future, _failure(f"the worker process died (killed, or out of memory?): {error}")))
            except Exception:
                results.append((future, _failure(traceback.format_exc()[-ERROR_CHARS:])))
        return results

    def stop(self, handles: list) -> None:
        self.stop_event.set()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _failure(error: str) -> dict:
    return {"status": "failed", "env_steps": None, "error": error, "duration_s": 0.0}


def import_ray():
    """The ray module; ImportError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError('the ray backend needs Ray: pip install "ssdinfluence[ray]"') from error
    return ray


class _RayBackend:
    """One Ray task per trial; the driver keeps the manifest. A stop cancels the tasks without
    force, which Ray delivers as a simulated SIGINT: the trainer's handler checkpoints and stops."""

    def __init__(self, address: str | None, capacity: int, threads: int, cpus: int, gpus: float, track: dict | None):
        ray = import_ray()
        self.ray, self.capacity, self.threads, self.track = ray, capacity, threads, track
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address=address)
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus)(run_trial)

    def submit(self, run_dir: str, values: dict):
        return self.task.remote(run_dir, values, self.threads, self.track)

    def wait(self, handles: list, timeout: float) -> list[tuple]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        results = []
        for ref in ready:
            try:
                results.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.TaskCancelledError:
                results.append((ref, {"status": "cancelled", "env_steps": None, "error": None, "duration_s": 0.0}))
            except self.ray.exceptions.RayError as error:
                results.append((ref, _failure(f"{type(error).__name__}: {error}"[-ERROR_CHARS:])))
        return results

    def stop(self, handles: list) -> None:
        for ref in handles:
            self.ray.cancel(ref)

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
