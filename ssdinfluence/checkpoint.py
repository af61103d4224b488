"""Checkpoints: atomic writes, loadable with ``torch.load(path, weights_only=True)``.

Everything is stored as tensors, plain Python numbers, strings, lists and dicts (numpy arrays
are converted; ``uint64`` RNG words travel as ``int64`` bit patterns), so the safe loader
accepts the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

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
    """Write ``payload`` to ``path`` atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint with the safe loader; :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ssdinfluence checkpoint")
    return payload
