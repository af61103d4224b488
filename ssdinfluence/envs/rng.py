"""Per-env counter-based random numbers (SplitMix64), usable inside Numba kernels.

Each env owns one ``uint64`` state word, so results never depend on thread count or on
any global RNG. Every draw advances only that env's word. The functions also run as plain
Python (``NUMBA_DISABLE_JIT=1`` or ``.py_func``) with identical results.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def next_u64(rng, b):
    """Advance env ``b``'s state in ``rng`` ([B] uint64) and return 64 random bits."""
    rng[b] = rng[b] + _GOLDEN
    return _mix(rng[b])


@njit(cache=True, inline="always")
def uniform(rng, b):
    """A float64 uniform on [0, 1) from env ``b``'s stream (53 random bits)."""
    return np.float64(next_u64(rng, b) >> _S11) * _INV_2_53


@njit(cache=True, inline="always")
def randint(rng, b, n):
    """An integer uniform on [0, n) from env ``b``'s stream (one draw; n < 2**31)."""
    return min(np.int64(uniform(rng, b) * n), n - 1)


def seed_states(seed: int, num_envs: int) -> np.ndarray:
    """Independent initial states for ``num_envs`` envs from one integer seed, ``[B] uint64``.

    Env ``b``'s state is a hash of ``(seed, b)``, so env ``b`` of a batch of 64 follows the
    same trajectory as env ``b`` of a batch of 1024 with the same seed.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLDEN)
        idx = np.arange(num_envs, dtype=np.uint64)
        states = _mix_array(base ^ (idx * _MIX2 + _GOLDEN))
    return states


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)
