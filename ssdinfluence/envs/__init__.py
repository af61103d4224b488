"""Cleanup and Harvest as batched Numba kernels. Imports no torch, click, rich or h5py."""

from .base import ENV_NAMES, BatchedEnv, EnvParams
from .maps import CLEANUP_MAP, HARVEST_MAP, MapLayout, parse_map

__all__ = ["ENV_NAMES", "BatchedEnv", "EnvParams", "CLEANUP_MAP", "HARVEST_MAP", "MapLayout", "parse_map", "make"]


def make(name: str, num_envs: int = 1, num_agents: int = 5, seed: int = 0, **kwargs) -> BatchedEnv:
    """Create a batched env: ``make("cleanup", num_envs=64, num_agents=5, seed=0)``.

    Keyword arguments: ``map`` (ASCII string), ``compat="reference"``, and any
    :class:`EnvParams` field (``horizon``, ``regrowth_probs``, ``waste_spawn_mode``, ...).
    """
    return BatchedEnv(name, num_envs=num_envs, num_agents=num_agents, seed=seed, **kwargs)
