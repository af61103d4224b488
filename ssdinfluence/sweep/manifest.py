"""The manifest: one record per trial in ``SWEEP_DIR/manifest.json``, written only by the
driver, atomically; and what a trial's run directory says it reached."""

from __future__ import annotations

import csv
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from ..rundir import open_metrics, saved_metrics
from .spec import Trial

STATUSES = ("pending", "running", "finished", "failed", "interrupted")
MANIFEST_FORMAT = "ssdinfluence-sweep-manifest"
MANIFEST_VERSION = 1
SAVE_EVERY_S = 5.0  # progress-only manifest updates are throttled to this interval


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


def _canonical(values: dict) -> str:
    return json.dumps(values, sort_keys=True)


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


def write_json(path: Path, payload) -> None:
    """Atomic: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


class Manifest:
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
        write_json(self.root / "manifest.json", {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "updated": _now(), "trials": self.records})
        self.dirty = self.urgent = False
        self.saved_at = time.monotonic()


def record_start(record: dict, started: set, when: float) -> None:
    if record["id"] in started:
        return
    started.add(record["id"])
    record.update(status="running", attempts=record["attempts"] + 1, started=_now(when), ended=None, eta_s=None)


def record_end(record: dict, outcome: dict, root: Path) -> None:
    record.update(status=outcome["status"], ended=_now(), eta_s=None,
                  duration_s=round(record["duration_s"] + outcome["duration_s"], 3))
    record["error"] = outcome["error"] if outcome["status"] == "failed" else None
    run_dir = root / record["run_dir"]
    record_progress(record, run_dir, running=False)
    # what a resume starts from: metrics.csv may have rows after the last checkpoint
    steps = outcome["env_steps"] if outcome["env_steps"] is not None else checkpoint_steps_or_none(run_dir)
    record["env_steps"] = steps or 0


def record_progress(record: dict, run_dir: Path, running: bool) -> bool:
    """Update env_steps, collective_return (and eta_s while running) from metrics.csv; True if
    anything changed."""
    row, collective = _metrics_tail(saved_metrics(run_dir))
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
        with open_metrics(path, "rb") as handle:
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


def checkpoint_steps(run_dir: str | Path) -> int | None:
    """Env steps of the run's checkpoint, None if it has none (CheckpointError if unreadable)."""
    from .. import checkpoint

    path = Path(run_dir) / "checkpoint.pt"
    return int(checkpoint.load(path)["env_steps"]) if path.exists() else None


def checkpoint_steps_or_none(run_dir: str | Path) -> int | None:
    try:
        return checkpoint_steps(run_dir)
    except Exception:  # reporting a failure must not fail on a bad checkpoint
        return None


def mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _now(when: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return moment.isoformat(timespec="seconds")
