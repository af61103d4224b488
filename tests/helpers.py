"""Shared helpers: tiny envs with agents placed by hand."""

from __future__ import annotations

import numpy as np

import ssdinfluence

# 9x9 open floor, walls around; spawn points in the corners (agents are placed by hand).
OPEN_MAP = """\
@@@@@@@@@
@P     P@
@       @
@       @
@       @
@       @
@       @
@P     P@
@@@@@@@@@"""


def make_env(name="cleanup", map=OPEN_MAP, num_agents=1, num_envs=1, seed=0, **kwargs):
    env = ssdinfluence.make(name, num_envs=num_envs, num_agents=num_agents, seed=seed, map=map, **kwargs)
    env.reset()
    return env


def place(env, positions, orientations, grid=None):
    """Put agents at ``positions`` ([N, 2]) facing ``orientations`` ([N]) in every env."""
    state = env.get_state()
    state["positions"][:] = np.asarray(positions, np.int32)
    state["orientations"][:] = np.asarray(orientations, np.int8)
    if grid is not None:
        state["grid"][:] = grid
    env.set_state(state)
    return env


def act(env, *actions):
    """Step every env with the same per-agent actions; returns (obs, rewards, info)."""
    batch = np.tile(np.asarray(actions, np.int32), (env.num_envs, 1))
    obs, rewards, _, _, info = env.step(batch)
    return obs, rewards, info

