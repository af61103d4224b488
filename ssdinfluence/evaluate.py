"""Evaluate a checkpoint: play K episodes with the trained policies and report the measures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import build_config
from .envs import make
from .metrics import OUTCOME_KEYS, EpisodeTracker
from .policies import make_policies
from .runtime import resolve_device
from .threads import require_memory


def load_policy(path, device="auto"):
    """(config, policies) from a checkpoint file or run directory.

    Raises :class:`~ssdinfluence.checkpoint.CheckpointError` naming the file if it is not a
    usable checkpoint (unreadable, foreign, or its weights do not fit its config).
    """
    device = resolve_device(device)
    path = Path(path)
    saved = checkpoint.load(path, map_location=device)
    try:
        config = build_config(saved["config"])
        num_actions = make(config.env, num_agents=config.agents, **config.env_kwargs).num_actions
        policy = make_policies(config, num_actions, device)
        policy.networks.load_state_dict(saved["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise checkpoint.CheckpointError(f"{path}: not a usable checkpoint ({type(error).__name__}: {error})") from error
    policy.networks.eval()
    return config, policy


def check_record_target(record) -> None:
    """Refuse an episode-log target that is not eval's to write, even with ``overwrite``: a
    file of a run directory where a run is training (:class:`~ssdinfluence.rundir.RunDirError`),
    or an existing file that is not an episode log (:class:`TrajectoryFileError`)."""
    from .rundir import RunDirError, RunFiles, in_use
    from .trajectories import TrajectoryFileError, TrajectoryReader

    path = Path(record)
    run = RunFiles(path.resolve().parent)
    if run.owns(path) and in_use(run.root):
        raise RunDirError(f"{path}: a file of run directory {run.root}, where a run is training (it holds "
                          f"{run.lock}); record the episodes to another file")
    if path.exists():
        try:
            TrajectoryReader(path).close()
        except TrajectoryFileError as error:
            raise TrajectoryFileError(path, f"not an episode log, so eval will not replace it ({error.reason}); "
                                            f"choose another file") from None


# Peak memory per env and agent while evaluating: measured 12 KB (harvest, 2 agents, going from
# 2,000 to 20,000 envs: the env's views, the forward's float32 copies, conv features and LSTM
# states), rounded up to 16 KiB for what the measurement missed.
_BYTES_PER_AGENT = 16 * 1024


def evaluate(path, episodes: int = 10, num_envs: int | None = None, seed: int = 12345, greedy: bool = False,
             device: str = "auto", record: str | None = None, overwrite: bool = False) -> dict:
    """Play ``episodes`` episodes (in batches of ``num_envs`` envs) and return per-episode results.

    Returns a dict of arrays over the E episodes: ``returns [E, N]``, ``collective_return [E]``
    and the social measures ``[E]``; ``record`` writes those E episodes to an HDF5 episode log,
    which must not exist unless ``overwrite`` (else ``ValueError``), and is never a file that
    :func:`check_record_target` refuses.
    """
    if record:
        check_record_target(record)
        if Path(record).exists() and not overwrite:
            raise ValueError(f"{record} already exists; pass overwrite=True to replace it")
    config, policy = load_policy(path, device)
    device = next(policy.networks.parameters()).device
    num_envs = num_envs or min(episodes, 16)
    require_memory(num_envs * config.agents * _BYTES_PER_AGENT, f"num_envs x agents = {num_envs} x {config.agents}")
    env = make(config.env, num_envs=num_envs, num_agents=config.agents, seed=seed, **config.env_kwargs)
    B, N = env.num_envs, env.num_agents
    recorder = None
    if record:
        from .recorder import TrajectoryRecorder

        log_config = replace(config, log_trajectories=",".join(map(str, range(B))), log_every=1)
        recorder = TrajectoryRecorder(Path(record), env, log_config, influence=policy.computes_influence,
                                      messages=policy.logs_messages)
    tracker = EpisodeTracker(B, N)
    generator = torch.Generator(device=device).manual_seed(seed)
    obs, info = env.reset()
    state = policy.initial_state(B, device)
    start = torch.ones(B, dtype=torch.bool, device=device)
    results, steps, reported = [], 0, 0
    with torch.no_grad():
        while reported < episodes:
            obs_t = torch.from_numpy(obs).to(device)
            prev = torch.from_numpy(info["prev_actions"]).long().to(device)
            visible = torch.from_numpy(info["visible"]).to(device)
            step = policy.act(obs_t, prev, visible, state, start, generator, greedy)
            state = step.state
            actions_np = step.actions.T.cpu().numpy()
            if recorder:
                recorder.before_step(obs)
            obs, rewards, _, truncated, info = env.step(actions_np)
            steps += B
            ended = tracker.update(rewards, truncated)
            logged = truncated
            if ended is not None:  # the measures cover the first ``episodes`` episodes: so does the log
                ended = {key: value[:episodes - reported] for key, value in ended.items()}
                reported += len(ended["returns"])
                results.append(ended)
                logged = np.zeros_like(truncated)
                logged[ended["env_index"]] = True
            if recorder:
                recorder.after_step(actions_np, rewards, logged, ended, steps, 0, step)
            start = torch.from_numpy(truncated.copy()).to(device)
    if recorder:
        recorder.close()
    out = {key: np.concatenate([r[key] for r in results])
           for key in ("returns", "collective_return", *OUTCOME_KEYS)}
    out["config"] = config
    return out
