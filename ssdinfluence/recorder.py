"""Records whole episodes of chosen envs during training into ``trajectories.h5``.

Per step it copies only the compact map state of the logged envs (and their views if asked),
so logging a few envs costs little even at large batch sizes. Episodes in progress are part
of the checkpoint, so a resumed run logs exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch

from .envs.base import MAP_FIELDS
from .metrics import OUTCOME_KEYS
from .trajectories import TrajectoryWriter


class TrajectoryRecorder:
    """Buffers the steps of ``config.logged_envs`` and appends every ``log_every``-th episode.

    ``influence``: also log each step's influence; ``messages``: each step's messages (what
    the policy's ``computes_influence`` and ``logs_messages`` say it has).
    """

    def __init__(self, path, env, config, influence: bool = False, messages: bool = False):
        self.envs = config.logged_envs  # E env indices
        self.every = config.log_every
        self.store_obs = config.log_observations
        self.env = env
        self.path = path
        self.config = config
        N = env.num_agents
        # per-step influence of logged episodes: exerted by each agent, and per (k, j) pair
        self.step_fields = {"influence": ((N,), np.float32), "influence_pairs": ((N, N), np.float32)} if influence else {}
        if messages:  # the message each agent sent at t
            self.step_fields["messages"] = ((N,), np.int16)
        self.writer = None
        self.episode_count = np.zeros(len(self.envs), np.int64)
        self.recording = np.ones(len(self.envs), bool)  # the first episode starts at reset
        self._clear()

    def _open(self, mode: str):
        env = self.env
        self.writer = TrajectoryWriter(
            self.path, env_name=env.name, num_agents=env.num_agents, num_actions=env.num_actions,
            map_text=env.layout.text, palette=env.palette, config=self.config.to_dict(),
            store_observations=self.store_obs, episode_fields={name: ((), np.float32) for name in OUTCOME_KEYS},
            step_fields=self.step_fields,
            mode=mode)

    def _clear(self, e: int | None = None):
        targets = range(len(self.envs)) if e is None else [e]
        if e is None:
            self.buffers = [None] * len(self.envs)
        for i in targets:
            self.buffers[i] = {name: [] for name in self._fields()}

    def _fields(self):
        return (*MAP_FIELDS, "actions", "rewards", "observations", *self.step_fields)

    def before_step(self, obs: np.ndarray) -> None:
        """Record the state s_t of the logged envs (before the step's actions)."""
        if not self.recording.any():
            return
        state = self.env.map_state(self.envs)
        for i in np.flatnonzero(self.recording):
            buffer = self.buffers[i]
            for name in MAP_FIELDS:
                buffer[name].append(state[name][i])
            if self.store_obs:
                buffer["observations"].append(obs[self.envs[i]].copy())

    def after_step(self, actions, rewards, truncated, ended, env_steps: int, update: int, step=None) -> None:
        """Record a_t, r_t and the step fields of ``step`` (the policy's ``ActOutput`` for a_t:
        its influence and messages); append the episodes this step ended."""
        extras = self._step_values(step) if self.step_fields else {}
        for i, b in enumerate(self.envs):
            if self.recording[i]:
                self.buffers[i]["actions"].append(actions[b].copy())
                self.buffers[i]["rewards"].append(rewards[b].copy())
                for name in self.step_fields:
                    self.buffers[i][name].append(extras[name][b].copy())
            if not truncated[b]:
                continue
            if self.recording[i]:
                row = int(np.flatnonzero(ended["env_index"] == b)[0])
                episode = {"env_index": b, "env_steps": env_steps, "update": update,
                           "returns": ended["returns"][row]}
                episode.update({name: np.float32(ended[name][row]) for name in OUTCOME_KEYS})
                self._append(i, episode)
            self._clear(i)
            self.episode_count[i] += 1
            self.recording[i] = self.episode_count[i] % self.every == 0

    def _step_values(self, step) -> dict:
        """The step fields of an ``ActOutput`` as numpy arrays ``[B, ...]``."""
        tensors = {"influence": step.influence, "influence_pairs": step.influence_pairs,
                   "messages": step.extras.get("messages")}
        return {name: tensors[name].cpu().numpy() for name in self.step_fields}

    def _append(self, i: int, episode: dict) -> None:
        if self.writer is None:
            self._open("w")
        steps = {name: np.stack(values) for name, values in self.buffers[i].items() if values}
        self.writer.append_episode(steps, episode)

    def state_dict(self) -> dict:
        """Counters and the episodes in progress, as tensors (for the checkpoint)."""
        buffers = [{name: torch.from_numpy(np.stack(values)) for name, values in buffer.items() if values}
                   for buffer in self.buffers]
        return {"episode_count": torch.from_numpy(self.episode_count.copy()),
                "recording": torch.from_numpy(self.recording.copy()), "buffers": buffers}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters and episodes in progress of :meth:`state_dict`; ValueError if damaged."""
        try:
            episode_count = state["episode_count"].numpy().copy()
            recording = state["recording"].numpy().copy()
            buffers = []
            for saved in state["buffers"]:
                buffer = {name: [] for name in self._fields()}
                for name, values in saved.items():
                    buffer[name] = list(values.numpy())
                buffers.append(buffer)
        except (AttributeError, KeyError, TypeError) as error:
            raise ValueError(f"damaged trajectory recorder state ({error!r})") from error
        if episode_count.shape != (len(self.envs),) or len(buffers) != len(self.envs):
            raise ValueError(f"the recorder state is for {len(buffers)} logged envs, this run logs {len(self.envs)}")
        self.episode_count, self.recording, self.buffers = episode_count, recording.astype(bool), buffers

    def resume(self, update: int) -> None:
        """Reopen the log of a run resumed from a checkpoint taken after ``update`` updates,
        dropping the episodes logged later.

        An episode's ``update`` is the number of updates done before the rollout that ended
        it, so the episodes tagged ``update`` (and later) were logged after the checkpoint.
        """
        if self.path.exists():
            self._open("a")
            self.writer.truncate_after_update(update - 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
