"""The driver: runs a sweep's pending trials on a backend and keeps the manifest."""

from __future__ import annotations

import time
from pathlib import Path

from ..rundir import RunDirError, in_use, saved_metrics, unpack
from .backends import make_backend
from .manifest import (
    Manifest,
    checkpoint_steps_or_none,
    mtime,
    plan,
    record_end,
    record_progress,
    record_start,
    write_json,
)
from .spec import SweepSpec, Trial, expand

POLL_S = 1.0
OLD_TRIALS_WAIT_S = 120.0  # for trials of a killed driver: its workers stop them after their current update


def run_sweep(sweep_dir: str | Path, spec: SweepSpec, *, backend: str = "local", workers: int | None = None,
              threads_per_trial: int | None = None, ray_address: str | None = None, cpus_per_trial: int = 1,
              gpus_per_trial: float = 0.0, on_progress=None, on_wait=None, track: dict | None = None) -> list[dict]:
    """Run every trial of ``spec`` that is not finished yet; return the final manifest records.

    ``local``: at most ``workers`` (default: min(trials to run, cores)) trials at once in spawned
    processes, each with ``threads_per_trial`` threads (default: cores // workers, at least 1).
    ``ray``: one task per trial with ``cpus_per_trial`` CPUs (also its thread count) and
    ``gpus_per_trial`` GPUs (a fraction shares one); connects to ``ray_address`` (default: the
    running instance of this process, else a new local one); ``workers`` caps the trials in
    flight (default: all, Ray queues them). ``on_progress(records)`` is called about once a
    second and whenever a trial changes state. A first SIGINT/SIGTERM stops the running trials
    after their current update (checkpointed, ``interrupted``) and starts no new ones; a second
    SIGINT aborts at once. ValueError for a bad spec; :class:`~ssdinfluence.rundir.RunDirError`
    for a sweep directory held by another driver, or trials still training in another process
    (the workers of a killed driver stop theirs) after :data:`OLD_TRIALS_WAIT_S`:
    ``on_wait(run_dirs, timeout_s)`` is called before waiting for those. ``track`` is passed to
    every trial's :func:`run_trial`.
    """
    root = Path(sweep_dir).resolve()
    trials = expand(spec)
    root.mkdir(parents=True, exist_ok=True)
    with _driver_lock(root):
        records = plan(root, trials)
        _wait_for_old_trials([root / r["run_dir"] for r in records if r["status"] != "finished"], on_wait)
        records = reconcile(root, records)
        by_id = {r["id"]: r for r in records}
        # A finished trial needs only its metrics (a study committed without its checkpoints goes
        # on in a fresh clone). Seed-major order: a sweep stopped part-way has run every grid
        # point at the same seeds, so its partial comparison is at equal budget.
        todo = sorted((t for t in trials if by_id[t.id]["status"] != "finished"),
                      key=lambda t: spec.seeds.index(t.seed))
        if not (root / "sweep.json").exists():
            write_json(root / "sweep.json", spec.to_dict())
        manifest = Manifest(root, records)
        manifest.save()
        if todo:
            runner = make_backend(backend, len(todo), workers, threads_per_trial, ray_address, cpus_per_trial,
                                  gpus_per_trial, track)
            try:
                _drive(runner, root, todo, by_id, manifest, on_progress)
            finally:
                runner.close()
    return records


def reconcile(root: Path, records: list[dict]) -> list[dict]:
    """Bring an earlier driver's records in line with the run directories on disk (in place)."""
    for r in records:
        run_dir = root / r["run_dir"]
        if r["status"] == "running":  # a driver that died without recording the end
            r["status"] = "interrupted"
        if r["status"] == "finished" and not saved_metrics(run_dir).exists():
            r["status"] = "pending"  # its run directory was removed: run it again
        if r["status"] != "finished":  # it goes on from its checkpoint, or from the start without one
            unpack(run_dir)  # a trial carried in a repository (rundir.pack) to this clone
            r["env_steps"] = checkpoint_steps_or_none(run_dir) or 0
    return records


def _drive(runner, root: Path, todo: list[Trial], by_id: dict, manifest: Manifest, on_progress) -> None:
    """Submit trials as the backend has room, record what they report, until all are done or a
    stop is asked for."""
    from ..runtime import stop_on_signals

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
                    config_mtime[trial.id] = mtime(run_dir / "config.json")
                    in_flight[runner.submit(str(run_dir), trial.values)] = by_id[trial.id]
                for handle, outcome in runner.wait(list(in_flight), POLL_S):
                    record = in_flight.pop(handle)
                    if outcome["status"] == "cancelled":  # by a stop, before or while it ran
                        outcome["status"] = "interrupted" if record["id"] in started else "pending"
                    if outcome["status"] != "pending":  # "pending": stopped before it began
                        record_start(record, started, time.time() - outcome["duration_s"])
                        record_end(record, outcome, root)
                    manifest.changed(status=True)
                for record in in_flight.values():
                    run_dir = root / record["run_dir"]
                    if record["id"] not in started and mtime(run_dir / "config.json") != config_mtime[record["id"]]:
                        record_start(record, started, time.time())  # the trainer writes config.json once set up
                        manifest.changed(status=True)
                    if record["id"] in started:
                        manifest.changed(status=False, updated=record_progress(record, run_dir, running=True))
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


def _wait_for_old_trials(run_dirs: list[Path], on_wait) -> None:
    """Return once no process trains in ``run_dirs``; RunDirError naming them after
    :data:`OLD_TRIALS_WAIT_S`."""
    held = [d for d in run_dirs if in_use(d)]
    if held and on_wait:
        on_wait(held, OLD_TRIALS_WAIT_S)
    deadline = time.monotonic() + OLD_TRIALS_WAIT_S
    while held:
        if time.monotonic() > deadline:
            raise RunDirError(f"{len(held)} trial(s) still training in another process after {OLD_TRIALS_WAIT_S:.0f} "
                              f"s: {', '.join(map(str, held))} (each holds its .lock); stop it, then resume the sweep")
        time.sleep(0.2)
        held = [d for d in held if in_use(d)]


def _driver_lock(root: Path):
    """One driver per sweep directory: two would train the same trial into one run directory.
    (Each trial's trainer also holds its own run directory's lock.)"""
    from ..rundir import exclusive

    return exclusive(root / "sweep.lock", f"another sweep is running in {root} (it holds {root / 'sweep.lock'})")
