"""Where trials run: ``local`` (a pool of spawned processes) or ``ray`` (tasks on a cluster).

A backend has ``capacity`` (trials at once), ``submit(run_dir, values) -> handle``,
``wait(handles, timeout) -> [(handle, outcome)]``, ``stop(handles)`` and ``close()``; an
outcome is what :func:`run_trial` returns (or ``cancelled``, for a Ray task stopped early).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..config import build_config
from .manifest import checkpoint_steps, checkpoint_steps_or_none

ERROR_CHARS = 4000  # tail of a failed trial's traceback kept in the manifest


def run_trial(run_dir: str, values: dict, threads: int, track: dict | None = None) -> dict:
    """Train one trial in ``run_dir`` to its full step count: skipped when its checkpoint is
    already there, resumed from a partial one. Never raises for the trial's own errors.
    ``track``: ``{"kind": "tensorboard" | "wandb", "project": str}`` to track the trial's updates.

    Returns ``{"status": finished | interrupted | failed, "env_steps": int | None, "error":
    str | None, "duration_s": float}``; a first SIGINT/SIGTERM stops it after the current
    update with a checkpoint (the trainer's own handling), giving ``interrupted``.
    """
    from ..rundir import pack, packed_path
    from ..train import train

    start = time.perf_counter()
    outcome = {"status": "failed", "env_steps": None, "error": None}
    try:
        config = build_config({**values, "out": run_dir, "threads": threads})
        done = checkpoint_steps(run_dir)
        if done is not None and done >= config.steps:
            outcome.update(status="finished", env_steps=done)
        else:
            tracking = {"track": track["kind"], "project": track["project"]} if track else {}
            result = train(config, resume=done is not None, **tracking)
            outcome.update(status="interrupted" if result.stopped_early else "finished", env_steps=result.env_steps)
            if not result.stopped_early and packed_path(Path(run_dir) / "checkpoint.pt").exists():
                pack(run_dir, unfinished=False)  # a carried trial is done: its packed checkpoint goes
    except KeyboardInterrupt:  # a second Ctrl-C, or a stop that came before the trainer's handler
        outcome.update(status="interrupted", env_steps=checkpoint_steps_or_none(run_dir))
    except Exception:
        outcome.update(error=traceback.format_exc()[-ERROR_CHARS:], env_steps=checkpoint_steps_or_none(run_dir))
    outcome["duration_s"] = round(time.perf_counter() - start, 3)
    return outcome


def make_backend(name, todo, workers, threads_per_trial, ray_address, cpus_per_trial, gpus_per_trial, track):
    if name == "local":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = workers or min(todo, cores)
        return _LocalBackend(workers, threads_per_trial or max(1, cores // workers), track)
    if name == "ray":
        return _RayBackend(ray_address, workers or todo, threads_per_trial or cpus_per_trial, cpus_per_trial,
                           gpus_per_trial, track)
    raise ValueError(f"unknown backend {name!r}; use local or ray")


_STOP_EVENT = None  # in a local worker: set by the driver to stop its trials
ORPHAN_CHECK_S = 0.2  # how often a worker checks that its driver lives
ORPHAN_GRACE_S = 300.0  # how long an orphaned worker's trial has to stop before the worker exits without it


def _init_local_worker(stop_event, driver_pid: int) -> None:
    """Runs first in every local worker. A Ctrl-C in a terminal reaches the whole process group:
    an idle worker ignores it (the trainer installs its own handler while training), and a stop
    asked for by the driver is relayed to the trainer as a SIGTERM. A worker whose driver died
    (even by SIGKILL) stops too: its trial after the current update, with a checkpoint."""
    global _STOP_EVENT
    _STOP_EVENT = stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_relay_stop, args=(stop_event,), daemon=True).start()
    if sys.platform.startswith("linux"):  # the kernel's SIGTERM comes at once, even while this process is busy in C
        import ctypes

        PR_SET_PDEATHSIG = 1  # sent when the thread that started this process ends: the driver's, which calls submit
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    threading.Thread(target=_exit_with_driver, args=(driver_pid,), daemon=True).start()


def _exit_with_driver(driver_pid: int) -> None:
    """Once the driver is gone (this process is reparented), keep sending this process SIGTERM:
    the trainer's handler stops the trial after its update with a checkpoint, and the next one,
    once no handler is installed, ends the process (it would otherwise wait for work forever).
    Also covers a driver that died before the parent-death signal was set, and other systems."""
    while os.getppid() == driver_pid:
        time.sleep(ORPHAN_CHECK_S)
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while time.monotonic() < deadline:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
    os._exit(1)


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
                                                initializer=_init_local_worker,
                                                initargs=(self.stop_event, os.getpid()))
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
