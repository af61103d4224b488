"""PettingZoo ``ParallelEnv`` front ends: one Cleanup or Harvest env on the batched kernel.

Requires the ``pettingzoo`` extra (``pip install "ssdinfluence[pettingzoo]"``). With PettingZoo
>= 1.27 the ids are in its registry (:mod:`ssdinfluence.registration`)::

    import pettingzoo, ssdinfluence
    env = pettingzoo.make("parallel", "ssdinfluence/cleanup-v0", num_agents=5, render_mode="rgb_array")

and with any version :func:`make_parallel` takes the same ids (or build a class directly,
``CleanupParallelEnv(num_agents=5)``)::

    env = make_parallel("ssdinfluence/cleanup-v0", num_agents=5, render_mode="rgb_array")
    observations, infos = env.reset(seed=0)
    while env.agents:
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)

Observations are ``[15, 15, 3] uint8`` copies (safe to keep). When the episode is truncated the
returned observations are the episode's last views and ``env.agents`` becomes empty; call
``reset`` to start again. ``infos[agent]`` holds ``visible`` ([N] bool, which agents this one
can see) and ``prev_actions`` ([N] int, every agent's last action). Keyword arguments are those
of :func:`ssdinfluence.make` (``horizon``, ``map``, ``compat``, rule parameters); PettingZoo's
``max_cycles`` is a synonym of ``horizon``.
"""

from __future__ import annotations

import numpy as np

try:
    from gymnasium import spaces
    from pettingzoo import ParallelEnv
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'ssdinfluence.pettingzoo_env needs the pettingzoo extra: pip install "ssdinfluence[pettingzoo]"'
    ) from error

from . import registration
from .envs import make


class SSDParallelEnv(ParallelEnv):
    """One env of ``name`` ("cleanup" or "harvest") as a PettingZoo parallel env."""

    metadata = {"render_modes": ["rgb_array"], "name": "ssdinfluence", "is_parallelizable": True}

    def __init__(self, name: str, num_agents: int = 5, render_mode: str | None = None,
                 seed: int = 0, render_scale: int = 8, max_cycles: int | None = None, **env_kwargs):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; only 'rgb_array' is supported")
        if max_cycles is not None:
            if env_kwargs.get("horizon", max_cycles) != max_cycles:
                raise ValueError(f"max_cycles ({max_cycles}) and horizon ({env_kwargs['horizon']}) differ; give one")
            env_kwargs["horizon"] = max_cycles
        self._env = make(name, num_envs=1, num_agents=num_agents, seed=seed, **env_kwargs)
        self.metadata = {**self.metadata, "name": f"ssdinfluence/{name}-v0"}
        self.render_mode = render_mode
        self.render_scale = render_scale
        self.possible_agents = [f"agent_{k}" for k in range(num_agents)]
        self.agents = []
        self.max_cycles = self._env.horizon
        self._actions = np.empty((1, num_agents), np.int64)
        # One space object per agent, returned every time (PettingZoo's seeding relies on it).
        self.observation_spaces = {a: spaces.Box(0, 255, self._env.observation_shape, np.uint8)
                                   for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(self._env.num_actions) for a in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def reset(self, seed=None, options=None):
        obs, info = self._env.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return self._per_agent(obs[0]), self._infos(info)

    def step(self, actions):
        """``actions``: every live agent's action, an integer in ``[0, num_actions)``.

        A missing or unknown agent, or an action that is not such an integer (``"1"``, ``1.0``),
        raises ``ValueError`` before the env moves.
        """
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        if not hasattr(actions, "keys"):
            raise ValueError(f"actions must be a dict agent -> action, got {type(actions).__name__}")
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise ValueError(f"actions for unknown or finished agents: {sorted(unknown, key=str)}")
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise ValueError(f"no action for agent(s) {missing}: every live agent must act")
        for k, agent in enumerate(self.possible_agents):
            action = actions[agent]
            if isinstance(action, np.ndarray) and action.shape == ():
                action = action[()]
            if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                    or not 0 <= action < self._env.num_actions:
                raise ValueError(f"action of {agent} must be an integer in 0..{self._env.num_actions - 1}, "
                                 f"got {action!r}")
            self._actions[0, k] = action
        obs, rewards, terminated, truncated, info = self._env.step(self._actions)
        done = bool(truncated[0])
        views = info["final_obs"][0] if done else obs[0]
        observations = self._per_agent(views)
        reward_dict = {a: float(rewards[0, k]) for k, a in enumerate(self.possible_agents)}
        terminations = dict.fromkeys(self.possible_agents, False)
        truncations = dict.fromkeys(self.possible_agents, done)
        infos = self._infos(info)
        if done:
            self.agents = []
        return observations, reward_dict, terminations, truncations, infos

    def render(self):
        if self.render_mode is None:
            return None
        return self._env.render(0, scale=self.render_scale)

    def state(self):
        """The whole map as RGB at one pixel per cell, ``[H, W, 3] uint8``."""
        return self._env.render(0, scale=1)

    def close(self):
        pass

    def _per_agent(self, views):
        return {a: views[k].copy() for k, a in enumerate(self.possible_agents)}

    def _infos(self, info):
        return {
            a: {"visible": info["visible"][0, k].copy(), "prev_actions": info["prev_actions"][0].copy()}
            for k, a in enumerate(self.possible_agents)
        }


class CleanupParallelEnv(SSDParallelEnv):
    def __init__(self, num_agents: int = 5, render_mode: str | None = None, **kwargs):
        super().__init__("cleanup", num_agents=num_agents, render_mode=render_mode, **kwargs)


class HarvestParallelEnv(SSDParallelEnv):
    def __init__(self, num_agents: int = 5, render_mode: str | None = None, **kwargs):
        super().__init__("harvest", num_agents=num_agents, render_mode=render_mode, **kwargs)


# env id -> class, from the ids that registration.py registers with PettingZoo >= 1.27
ENV_IDS = {env_id: globals()[entry.rpartition(":")[2]] for env_id, entry in registration.ENV_IDS.items()}


def make_parallel(env_id: str, **kwargs) -> SSDParallelEnv:
    """``make_parallel("ssdinfluence/harvest-v0", num_agents=5, render_mode="rgb_array")``, with
    any PettingZoo version; ``pettingzoo.make("parallel", env_id, ...)`` does the same from 1.27."""
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; registered: {sorted(ENV_IDS)}")
    return ENV_IDS[env_id](**kwargs)


registration.register_pettingzoo_envs()
