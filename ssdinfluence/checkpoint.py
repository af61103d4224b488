"""Checkpoints: atomic writes, loadable with ``torch.load(path, weights_only=True)``.

Everything is stored as tensors, plain Python numbers, strings, lists and dicts (numpy arrays
are converted; ``uint64`` RNG words travel as ``int64`` bit patterns), so the safe loader
accepts the file.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from .rundir import atomic_write

FORMAT = "ssdinfluence-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not ours."""


def to_storable(obj):
    """Recursively turn numpy arrays into tensors (uint64 as int64 bit patterns)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.uint64:
            return {"__uint64__": torch.from_numpy(obj.view(np.int64).copy())}
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, dict):
        return {k: to_storable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_storable(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def from_storable(obj):
    """Inverse of :func:`to_storable`: tensors become numpy arrays again."""
    if isinstance(obj, dict):
        if set(obj) == {"__uint64__"}:
            return obj["__uint64__"].numpy().view(np.uint64)
        return {k: from_storable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    return obj


def save(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file renamed over the old one).

    It is serialised in memory first, so the file is written by Python's own I/O: a full
    disk then raises :class:`~ssdinfluence.rundir.DiskFullError` naming the file (torch's
    writer reports only "unexpected pos"), and the old checkpoint stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write(path, buffer.getbuffer())


def load(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint with the safe loader; :class:`CheckpointError` naming the problem:
    a file that is unreadable, not ours, damaged anywhere in its bytes (every archive member's
    CRC is checked: ``torch.load`` does not, and reads a flipped bit inside a tensor as a
    weight), or whose weights are not all finite."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad file, with long explanations
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot read checkpoint {path}: damaged, truncated or not a checkpoint "
                              f"({type(error).__name__}: {first})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ssdinfluence checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format_version {payload.get('format_version')!r} "
                              f"(this ssdinfluence reads {FORMAT_VERSION})")
    model = payload.get("model")
    if isinstance(model, dict):
        bad = [name for name, value in model.items()
               if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            raise CheckpointError(f"{path}: its weights are not all finite (NaN or inf in {', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}): the run that saved it had diverged")
    return payload


def _check_archive(path: Path) -> None:
    """CheckpointError unless ``path`` is a zip archive whose every member matches its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: damaged, truncated or not a checkpoint "
                              f"({type(error).__name__}: {error})") from error
    if bad is not None:
        raise CheckpointError(f"{path}: damaged (its member {bad} fails its CRC check)")


# What a checkpoint needs for training to continue from it (see train.TrainState.save).
RESUME_KEYS = ("config", "update", "env_steps", "model", "optimizer", "sampler", "env_state", "lstm_state",
               "episode_start", "tracker", "reward_transform", "recorder")


def load_for_resume(path: Path, config, map_location="cpu") -> dict:
    """Load the checkpoint a run resumes from, checked against the run's ``config``.

    :class:`CheckpointError` naming the file if it is unreadable, lacks a part training needs,
    or was written by a different run (a field that a resume may not change differs).
    """
    from .config import RESUMABLE

    path = Path(path)
    payload = load(path, map_location)
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, it lacks {missing}")
    update, env_steps = payload["update"], payload["env_steps"]
    if not (isinstance(update, int) and isinstance(env_steps, int) and update >= 1 and env_steps >= 1):
        raise CheckpointError(f"{path}: damaged checkpoint (update {update!r}, env_steps {env_steps!r})")
    saved = payload["config"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (its config is a {type(saved).__name__})")
    ours = json.loads(json.dumps(config.to_dict()))  # as config.json holds it (tuples as lists)
    saved = json.loads(json.dumps(saved, default=repr))
    differ = sorted(key for key in set(ours) - RESUMABLE - {"out"} if saved.get(key) != ours[key])
    if differ:
        shown = ", ".join(f"{key} {saved.get(key)!r} there, {ours[key]!r} in config.json" for key in differ[:4])
        raise CheckpointError(f"{path}: written by a different run ({shown})")
    return payload
