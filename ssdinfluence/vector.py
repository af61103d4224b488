"""A flat ``gymnasium.vector.VectorEnv`` over every agent of every env, for outside trainers.

Parameter-shared multi-agent training with a single-agent trainer (the SB3, CleanRL and
PufferLib way) wants one batch entry per agent::

    import ssdinfluence
    envs = ssdinfluence.make_vec("cleanup", num_envs=64, num_agents=5, seed=0)
    obs, info = envs.reset()                 # obs [320, 15, 15, 3] uint8 (64 envs x 5 agents)
    obs, rewards, terminations, truncations, info = envs.step(envs.action_space.sample())

Entry ``i = b * N + k`` is agent ``k`` of env ``b``. Requires gymnasium >= 1.1 (``pip install
"ssdinfluence[gymnasium]"``).

* ``single_observation_space`` ``Box(0, 255, [15, 15, 3], uint8)``, ``single_action_space``
  ``Discrete(A)`` (9 Cleanup, 8 Harvest); ``observation_space`` / ``action_space`` are their
  batches over ``num_envs = B * N`` entries.
* Autoreset in the same step (``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP``):
  episodes are truncated at the horizon (never terminated), and the step that ends them
  already returns the next episode's first view. Then, gymnasium's convention,
  ``info["final_obs"]`` is a ``[B * N]`` object array holding each finished entry's last
  view (None elsewhere), ``info["_final_obs"]`` the ``[B * N] bool`` mask, and
  ``info["final_info"] = {"episode_return": [B * N] float32, "_episode_return": mask}``.
* Zero copy: observations ``[B * N, 15, 15, 3] uint8``, rewards ``[B * N] float32`` and the
  arrays inside ``final_obs`` are views of the kernel's own buffers, overwritten by the next
  step (copy what you keep). Only the per-agent done flags (``[B * N] bool``, the env's
  ``[B]`` flags repeated per agent) are written into small arrays of their own each step.
* Actions: any integer array of ``B * N`` entries; bad ones raise ``ValueError`` (from the
  batched env, which is left usable).
"""

from __future__ import annotations

import numpy as np

try:
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError('ssdinfluence.make_vec needs gymnasium: pip install "ssdinfluence[gymnasium]"') from error

from .envs import BatchedEnv, make


def make_vec(name: str, num_envs: int = 1, num_agents: int = 5, seed: int = 0, **rules) -> AgentVectorEnv:
    """``num_envs`` (B) envs of ``name`` with ``num_agents`` (N) agents each as one flat vector
    env of ``B * N`` entries; ``rules`` as for :func:`ssdinfluence.make` (``horizon``, ``map``,
    ``compat``, rule parameters)."""
    return AgentVectorEnv(make(name, num_envs=num_envs, num_agents=num_agents, seed=seed, **rules))


class AgentVectorEnv(VectorEnv):
    """Every agent of a :class:`~ssdinfluence.envs.BatchedEnv` as one entry of a vector env."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, env: BatchedEnv):
        self.env = env
        B, N = env.num_envs, env.num_agents
        self.num_envs = B * N
        self.single_observation_space = spaces.Box(0, 255, env.observation_shape, np.uint8)
        self.single_action_space = spaces.Discrete(env.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._terminations = np.zeros((B, N), np.bool_)
        self._truncations = np.zeros((B, N), np.bool_)
        self._flat_terminations, self._flat_truncations = self._terminations.reshape(-1), self._truncations.reshape(-1)
        self._kernel_obs = self._kernel_rewards = self._flat_obs = self._flat_rewards = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episodes everywhere; ``seed`` (one int) reseeds every env's stream (as
        :meth:`BatchedEnv.reset`), and the spaces' samplers. Returns ``(obs, {})``."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ValueError(f"seed must be one integer for all envs (their streams derive from it), got {seed!r}")
        obs, _ = self.env.reset(seed=None if seed is None else int(seed))  # first: the package's own range check
        super().reset(seed=seed)
        if seed is not None:
            self.action_space.seed(int(seed))
        self._terminations[:] = False
        self._truncations[:] = False
        return obs.reshape(self.observation_space.shape), {}

    def step(self, actions):
        """``actions`` ``[B * N]`` ints -> ``(obs, rewards, terminations, truncations, info)``."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},) (num_envs x num_agents), "
                             f"got {actions.shape}")
        obs, rewards, terminated, truncated, info = self.env.step(actions.reshape(self._truncations.shape))
        if obs is not self._kernel_obs:  # the env's buffers never change: their flat views are made once
            self._kernel_obs, self._flat_obs = obs, obs.reshape(self.observation_space.shape)
            self._kernel_rewards, self._flat_rewards = rewards, rewards.reshape(self.num_envs)
        self._terminations[:] = terminated[:, None]
        self._truncations[:] = truncated[:, None]
        infos = self._final_infos(info) if truncated.any() else {}
        return self._flat_obs, self._flat_rewards, self._flat_terminations, self._flat_truncations, infos

    def _final_infos(self, info: dict) -> dict:
        done = self._flat_truncations
        final_obs = info["final_obs"].reshape(self.observation_space.shape)
        views = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            views[i] = final_obs[i]
        returns = info["episode_returns"].reshape(self.num_envs)
        return {"final_obs": views, "_final_obs": done.copy(),
                "final_info": {"episode_return": returns, "_episode_return": done.copy()},
                "_final_info": done.copy()}

    def close_extras(self, **kwargs) -> None:
        pass
