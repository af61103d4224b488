"""Reward transforms usable with any model: each agent is trained on its transformed reward.

Pure numpy (no torch). Every transform is called once per env step::

    transform = make_reward_transform("inequity", num_envs=B, num_agents=N)
    shaped = transform(rewards, episode_start)   # rewards [B, N] float32 -> shaped [B, N] float32

``episode_start`` ``[B] bool`` marks the envs whose *previous* step ended an episode (so
``rewards`` is the first step of a new one); pass all True at the first call. Stateful
transforms reset those envs' state before applying this step. ``state_dict()`` /
``load_state_dict()`` save and restore the state exactly (plain numpy arrays).

Transforms (``REWARD_TRANSFORMS``):

* ``"none"`` (:class:`Identity`): ``r'_k = r_k``.
* ``"collective"`` (:class:`Collective`): ``r'_k = sum_i r_i``.
* ``"prosocial"`` (:class:`Prosocial`): ``r'_k = r_k + eta * sum_{i != k} r_i``, ``eta`` in
  [0, 1] (0: selfish, 1: collective), default 0.85 (the paper's best).
* ``"inequity"`` (:class:`InequityAversion`, Hughes et al. 2018): smoothed rewards
  ``e_j^t = gamma * lambda * e_j^{t-1} + r_j^t`` (``e^{-1} = 0`` at each episode start) and
  ``r'_i = r_i - alpha/(N-1) sum_j max(e_j - e_i, 0) - beta/(N-1) sum_j max(e_i - e_j, 0)``.
  Both terms are penalties (disadvantageous inequity weighted by ``alpha``, advantageous by
  ``beta``). Defaults alpha=5, beta=0.05, gamma=0.99, lambda=0.975. With N = 1 there is
  nobody to compare with: ``r' = r``.

Arithmetic is done in float64 and the result cast to float32.
"""

from __future__ import annotations

import math

import numpy as np

from .envs.base import positive_int
from .names import REWARD_TRANSFORMS

__all__ = [
    "REWARD_TRANSFORMS",
    "Collective",
    "Identity",
    "InequityAversion",
    "Prosocial",
    "RewardTransform",
    "make_reward_transform",
]



def _real(name: str, value, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]`` (finite), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"parameter {name} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"parameter {name} must be finite and in [{low}, {high}], got {value!r}")
    return value


class RewardTransform:
    """Base class: ``__call__(rewards [B, N] float32, episode_start [B] bool) -> [B, N] float32``.

    Subclasses implement :meth:`_transform` (on a ``[B, N] float64`` copy of the rewards,
    after the state of starting episodes was reset by :meth:`_reset`) and, if stateful,
    :meth:`_reset`, list in :attr:`_state_names` and keep their state as ``float64`` attributes.
    """

    name = "base"
    _state_names: tuple[str, ...] = ()  # names of the [B, N] float64 state attributes

    def __init__(self, num_envs: int, num_agents: int):
        self.num_envs = positive_int("num_envs", num_envs)
        self.num_agents = positive_int("num_agents", num_agents)

    def __call__(self, rewards, episode_start) -> np.ndarray:
        """Transform one step's rewards.

        Args:
            rewards: ``[B, N] float32`` (any real dtype accepted), this step's env rewards.
            episode_start: ``[B] bool``, True where this step is the first of an episode.

        Returns:
            a new ``[B, N] float32`` array of transformed rewards.
        """
        rewards = np.asarray(rewards)
        episode_start = np.asarray(episode_start)
        B, N = self.num_envs, self.num_agents
        if rewards.shape != (B, N):
            raise ValueError(f"rewards have shape {rewards.shape}, expected {(B, N)} (num_envs, num_agents)")
        if not (np.issubdtype(rewards.dtype, np.floating) or np.issubdtype(rewards.dtype, np.integer)):
            raise ValueError(f"rewards must be real numbers, got dtype {rewards.dtype}")
        if episode_start.shape != (B,) or episode_start.dtype != np.bool_:
            raise ValueError(
                f"episode_start must be a bool array of shape {(B,)}, got {episode_start.dtype} {episode_start.shape}"
            )
        if episode_start.any():
            self._reset(episode_start)
        return self._transform(rewards.astype(np.float64)).astype(np.float32)

    def _reset(self, mask: np.ndarray) -> None:
        for name in self._state_names:
            getattr(self, name)[mask] = 0.0

    def _transform(self, rewards: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state arrays (``[B, N] float64`` each; empty for stateless transforms)."""
        return {name: getattr(self, name).copy() for name in self._state_names}

    def load_state_dict(self, state: dict) -> None:
        """Restore the state saved by :meth:`state_dict` of a transform of the same kind and size."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict of arrays, got {type(state).__name__}")
        if set(state) != set(self._state_names):
            raise ValueError(f"state keys {sorted(state)} do not match {sorted(self._state_names)} for {self.name!r}")
        values = {}
        for name in self._state_names:
            value = np.asarray(state[name])
            expected = getattr(self, name).shape
            if value.shape != expected:
                raise ValueError(f"state[{name!r}] has shape {value.shape}, expected {expected}")
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                raise ValueError(f"state[{name!r}] must be real numbers, got dtype {value.dtype}")
            values[name] = value
        for name, value in values.items():
            getattr(self, name)[...] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_envs={self.num_envs}, num_agents={self.num_agents})"


class Identity(RewardTransform):
    """``r'_k = r_k`` (each agent trains on its own env reward). Stateless."""

    name = "none"

    def _transform(self, rewards: np.ndarray) -> np.ndarray:
        return rewards


class Collective(RewardTransform):
    """``r'_k = sum_i r_i``: every agent gets the collective reward of its env. Stateless."""

    name = "collective"

    def _transform(self, rewards: np.ndarray) -> np.ndarray:
        return np.broadcast_to(rewards.sum(axis=1, keepdims=True), rewards.shape)


class Prosocial(RewardTransform):
    """``r'_k = r_k + eta * sum_{i != k} r_i``, ``eta`` in [0, 1] (default 0.85). Stateless."""

    name = "prosocial"

    def __init__(self, num_envs: int, num_agents: int, eta: float = 0.85):
        super().__init__(num_envs, num_agents)
        self.eta = _real("eta", eta, 0.0, 1.0)

    def _transform(self, rewards: np.ndarray) -> np.ndarray:
        others = rewards.sum(axis=1, keepdims=True) - rewards
        return rewards + self.eta * others

    def __repr__(self) -> str:
        return f"Prosocial(num_envs={self.num_envs}, num_agents={self.num_agents}, eta={self.eta})"


class InequityAversion(RewardTransform):
    """Inequity aversion (Hughes et al. 2018), with temporally smoothed rewards.

    State: ``smoothed`` ``[B, N] float64``, ``e_j^{t-1}``; zeroed where ``episode_start``.
    Per step: ``e_j^t = gamma * lam * e_j^{t-1} + r_j^t`` and
    ``r'_i = r_i - alpha/(N-1) sum_j max(e_j - e_i, 0) - beta/(N-1) sum_j max(e_i - e_j, 0)``
    (both terms penalties; ``r' = r`` when N = 1).

    Parameters: ``alpha >= 0`` (disadvantageous inequity, default 5), ``beta >= 0``
    (advantageous inequity, default 0.05), ``gamma`` and ``lam`` in [0, 1] (defaults 0.99 and
    0.975; ``lam`` is the paper's lambda, also accepted as ``lambda`` by
    :func:`make_reward_transform`).
    """

    name = "inequity"
    _state_names = ("smoothed",)

    def __init__(self, num_envs: int, num_agents: int, alpha: float = 5.0, beta: float = 0.05,
                 gamma: float = 0.99, lam: float = 0.975):
        super().__init__(num_envs, num_agents)
        self.alpha = _real("alpha", alpha, 0.0, math.inf)
        self.beta = _real("beta", beta, 0.0, math.inf)
        self.gamma = _real("gamma", gamma, 0.0, 1.0)
        self.lam = _real("lam", lam, 0.0, 1.0)
        self.smoothed = np.zeros((self.num_envs, self.num_agents), np.float64)

    def _transform(self, rewards: np.ndarray) -> np.ndarray:
        smoothed = self.smoothed
        smoothed *= self.gamma * self.lam
        smoothed += rewards
        n = self.num_agents
        if n == 1:
            return rewards
        # diff[b, i, j] = e_j - e_i
        diff = smoothed[:, None, :] - smoothed[:, :, None]
        disadvantage = np.maximum(diff, 0.0).sum(axis=2)
        advantage = np.maximum(-diff, 0.0).sum(axis=2)
        return rewards - (self.alpha / (n - 1)) * disadvantage - (self.beta / (n - 1)) * advantage

    def __repr__(self) -> str:
        return (f"InequityAversion(num_envs={self.num_envs}, num_agents={self.num_agents}, alpha={self.alpha}, "
                f"beta={self.beta}, gamma={self.gamma}, lam={self.lam})")


_CLASSES = {"none": Identity, "collective": Collective, "prosocial": Prosocial, "inequity": InequityAversion}
_PARAMS = {"none": (), "collective": (), "prosocial": ("eta",), "inequity": ("alpha", "beta", "gamma", "lam")}


def make_reward_transform(name: str, num_envs: int, num_agents: int, **params) -> RewardTransform:
    """Build the transform called ``name`` (one of ``REWARD_TRANSFORMS``) for B envs x N agents.

    ``params`` are the transform's own parameters (``eta`` for ``"prosocial"``; ``alpha``,
    ``beta``, ``gamma``, ``lam`` (or ``lambda``) for ``"inequity"``). An unknown name, an
    unknown parameter or a bad value raises ``ValueError`` naming it.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown reward transform {name!r}; valid names: {', '.join(REWARD_TRANSFORMS)}")
    if name == "inequity" and "lambda" in params:
        if "lam" in params:
            raise ValueError("give either lam or lambda for 'inequity', not both")
        params["lam"] = params.pop("lambda")
    unknown = sorted(set(params) - set(_PARAMS[name]))
    if unknown:
        known = ", ".join(_PARAMS[name]) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for reward transform {name!r}; its parameters: {known}")
    return _CLASSES[name](num_envs, num_agents, **params)
