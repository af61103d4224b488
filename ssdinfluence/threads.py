"""Process-wide CPU settings for throughput: threads for the envs (Numba) and the networks
(torch), chosen so that no thread spins against another one or against other processes, and the
allocator's handling of large temporaries. Imports no torch at module level.

One process holds two thread pools: Numba's (the env kernels, ``prange`` over envs) and torch's
(intra-op parallelism and MKL/oneDNN). On Linux both are GNU OpenMP runtimes, two separate
copies: the system's for Numba's ``omp`` layer, torch's own bundled one. By default an idle
OpenMP thread spins for a while before it sleeps, so after every env step Numba's workers burn
the cores torch's workers need, and vice versa; beside any other busy process (a sweep, a
browser) the spinning threads and the real work take turns on the cores and throughput collapses
to 1-10% of its quiet value (``bench/contention.py``). So:

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep at once (GNU and Intel OpenMP both
  honour it). Each runtime reads it once, when it is loaded: torch's at ``import torch``,
  Numba's at the first parallel kernel. :func:`set_environment_defaults` therefore runs when
  ``ssdinfluence`` is imported, before this package imports torch; a program that imports torch
  first should set the variable itself (a value already set is always left alone).
* Numba's threading layer: ``omp`` first (it honours the wait policy), then ``workqueue`` (no
  OpenMP, no spinning), then ``tbb``, so that a TBB installed for another package does not
  silently replace it.
* Small batches step on one thread (:func:`env_threads`): below about 64 envs a step is so
  short that waking a second thread costs more than it saves, and under load the woken thread
  may wait for a core.
* :func:`configure` sets torch's and Numba's thread counts together (``threads=0``: every core
  this process may run on, as ``os.sched_getaffinity`` reports, not the machine's count), and
  :func:`keep_freed_memory`. With ``threads=0`` on a machine of 2 cores or fewer, torch gets
  one thread (:func:`default_torch_threads`): a passive OpenMP thread is woken by a futex at
  every parallel op, and for this package's small networks that costs more than the second
  core gives (measured on 2 cores, quiet: PPO baseline at 32 envs 4,105 env steps/s on one
  torch thread against 3,382 on two; 4,958 against 4,722 at 128 envs). That holds for the
  rollout's per-step ops; the update's matmuls over a whole minibatch are large enough to pay
  for the wake-ups, so the trainer runs the update on every core (:func:`torch_threads`): one
  PPO minibatch's forward and backward took 69 ms on two passive threads against 100 ms on one
  (AMD EPYC, 2 cores, quiet). The rollout's ops also pay for both cores once the batch is
  large, from 128 envs on 2 cores (:func:`rollout_torch_threads`). More cores are not
  measured, so they keep one torch thread per core throughout.
* :func:`keep_freed_memory`: an update's large temporaries (tens of MB each) are by default
  mapped fresh from the OS and returned on free, so every one pays its page faults again; with
  glibc told to keep them, an update's forward and backward take about 15% less CPU time. The
  process keeps its peak memory instead of returning it, and over a long run its heap
  fragments: a soak of 1e7 env steps grew from 804 to 1,206 MiB, in steps. So the trainer calls
  :func:`release_freed_memory` every :data:`RELEASE_EVERY` updates.

Results never depend on these choices: the env kernels and the trainer are deterministic at any
thread count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager

ENVIRONMENT_DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "NUMBA_THREADING_LAYER_PRIORITY": "omp workqueue tbb",
}
ENVS_PER_THREAD = 64  # env steps below 2 x 64 envs run on one thread (see the module docstring)
RELEASE_EVERY = 50  # updates between release_freed_memory calls (a page refault per 50 updates)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


def set_environment_defaults() -> None:
    """Put :data:`ENVIRONMENT_DEFAULTS` into ``os.environ`` where unset (a user's value wins).

    Effective for each OpenMP runtime not yet loaded; for Numba also when it is already imported,
    as long as no parallel kernel has run yet.
    """
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before us: its config has read the environment already
        numba.config.THREADING_LAYER_PRIORITY = os.environ["NUMBA_THREADING_LAYER_PRIORITY"].split()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; the machine's count where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# More threads than this many per core only oversubscribe the cores (``--threads 10000`` made an
# update 18x slower), so a larger count is refused as a mistake.
THREADS_PER_CORE_LIMIT = 4


def check_thread_count(threads: int) -> None:
    """ValueError unless ``threads`` is 0 (all cores) or at most THREADS_PER_CORE_LIMIT per core."""
    limit = THREADS_PER_CORE_LIMIT * available_cores()
    if not 0 <= threads <= limit:
        raise ValueError(f"threads must be in 0..{limit} ({THREADS_PER_CORE_LIMIT} x the {available_cores()} cores "
                         f"this process may use; 0: all of them), got {threads}")


def host_memory() -> int | None:
    """Bytes of physical memory on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def require_memory(needed: int, what: str) -> None:
    """ValueError, before anything is allocated, if ``needed`` bytes would take 80% of this
    machine's memory; ``what`` says what needs them and how to need less."""
    memory = host_memory()
    if memory is not None and needed >= 0.8 * memory:
        raise ValueError(f"{what} needs at least {needed / 2**30:.1f} GiB, more than this machine's "
                         f"{memory / 2**30:.1f} GiB of memory: lower num_envs")


def configure(threads: int = 0) -> int:
    """Use ``threads`` threads for torch and for the env kernels (0: :func:`available_cores` for
    the env kernels, :func:`default_torch_threads` of them for torch).

    Returns the count set. Numba's count is capped by its pool size (``NUMBA_NUM_THREADS``).
    """
    import numba
    import torch

    check_thread_count(threads)
    count = threads or available_cores()
    torch.set_num_threads(threads or default_torch_threads(count))
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    keep_freed_memory()
    return count


@contextmanager
def torch_threads(count: int):
    """Run the enclosed torch ops on ``count`` intra-op threads (the update's: its matmuls are
    large enough to pay for waking the other threads, see the module docstring)."""
    import torch

    current = torch.get_num_threads()
    if count == current:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(current)


def default_torch_threads(cores: int) -> int:
    """Torch's threads when the user chose none: 1 on 2 cores or fewer, else one per core (see
    the module docstring)."""
    return 1 if cores <= 2 else cores


def rollout_torch_threads(cores: int, num_envs: int) -> int:
    """Torch's threads in the rollout when the user chose none: :func:`default_torch_threads`,
    except that on 2 cores or fewer a batch of :data:`ROLLOUT_ENVS_PER_THREAD` envs per core
    takes them all: its per-step matmuls are then large enough to pay for the wake-ups (PPO
    baseline at 128 envs x 128 steps on 2 cores, quiet, alternating: 17,455 env steps/s on two
    torch threads against 14,465 on one; at 64 envs 0.93 of one thread)."""
    if cores > 2:
        return default_torch_threads(cores)
    return env_threads(num_envs, cores, per_thread=ROLLOUT_ENVS_PER_THREAD)


ROLLOUT_ENVS_PER_THREAD = 64


def keep_freed_memory() -> bool:
    """Have glibc serve blocks up to 1 GiB from its heap and never trim it (see the module
    docstring). Returns whether it applied (False off glibc, e.g. macOS or musl)."""
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim(0)``, which also returns
    whole free pages inside the heap, not only at its top). With :func:`keep_freed_memory` the
    heap fragments over a long run and its free holes stay resident; the trainer calls this
    every :data:`RELEASE_EVERY` updates, so resident memory stays flat while an update still
    reuses the pages of the one before. Returns whether it ran (False off glibc)."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def _libc_function(name: str):
    """glibc's ``name`` through ctypes, or None off Linux or where libc lacks it."""
    library = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


def env_threads(num_envs: int, threads: int, per_thread: int = ENVS_PER_THREAD) -> int:
    """Threads a batch of ``num_envs`` units of work gets out of ``threads``: one per
    ``per_thread`` units (64 envs for an env step), at least 1."""
    return max(1, min(threads, num_envs // per_thread))


@contextmanager
def for_envs(num_envs: int, per_thread: int = ENVS_PER_THREAD):
    """Run the enclosed Numba kernels of a ``num_envs`` batch on :func:`env_threads` threads."""
    import numba

    current = numba.get_num_threads()
    wanted = env_threads(num_envs, current, per_thread)
    if wanted == current:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(current)
