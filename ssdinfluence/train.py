"""The trainer: N independent agents learning with PPO or A2C on a batch of envs.

Read :func:`_train` top to bottom (:func:`train` checks the device and takes the run
directory's lock around it): set up, (resume,) then repeat {collect a rollout, estimate
advantages, update, log, checkpoint} until the step budget is spent or a stop is asked for.
What a policy can do (influence, messages, extra losses) it says itself (:class:`Policy`);
what a checkpoint holds is one :class:`TrainState`.

Rollout tensors (:class:`Rollout`; T rollout steps, B envs, N agents, L BPTT length):
``obs [T, B, N, 15, 15, 3] uint8``, ``actions``, ``prev_actions [T, B, N] int64``,
``logprobs``, ``values``, ``rewards`` ``[T, B, N] float32``, ``episode_start [T, B] bool``
(step t opens an episode: the LSTM state is zeroed before it), ``done [T, B] bool`` (step t
ended one), ``visible [T, B, N, N] bool``, ``extras``: the policy's per-step tensors
``[T, B, N]`` by name, ``lstm_states``: each LSTM state tensor at every BPTT chunk start,
``[T // L, N, B, H]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import __version__, checkpoint, rundir, threads
from .algos import clip_grad_norm_per_agent, gae, linear_schedule, normalise_per_agent, policy_loss_terms
from .config import Config, check_memory
from .envs import BatchedEnv, make
from .envs.tiles import CLEAN, FIRE
from .influence import influence_beta
from .metrics import OUTCOME_KEYS, BeamTracker, EpisodeTracker
from .policies import ActOutput, make_policies, policy_class
from .rewards import RewardTransform, make_reward_transform
from .rundir import RunFiles
from .runtime import resolve_device, stop_on_signals

if TYPE_CHECKING:  # the recorder (and h5py) is imported only when a run logs trajectories
    from .recorder import TrajectoryRecorder

TIMERS = ("env", "forward", "backward", "logging")


@dataclass
class TrainResult:
    run_dir: Path
    updates: int
    env_steps: int
    stopped_early: bool
    last_row: dict = field(default_factory=dict)


@dataclass
class TrainState:
    """What a checkpoint holds: the learners, the envs, the logs in progress and the counters
    carried from update to update. :meth:`save` and :meth:`restore` are two sides of one file,
    so a resumed run continues exactly as an uninterrupted one would have."""

    config: Config
    networks: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator  # actions and minibatches
    env: BatchedEnv
    tracker: EpisodeTracker
    reward_transform: RewardTransform
    recorder: TrajectoryRecorder | None  # None when no env is logged
    lstm_state: tuple  # tensors [N, B, H]
    episode_start: np.ndarray  # [B] bool: the next step opens an episode
    update: int = 0
    env_steps: int = 0

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically: a kill or a full disk (DiskFullError) leaves the last one."""
        checkpoint.save(path, {
            "config": self.config.to_dict(),
            "versions": {"ssdinfluence": __version__, "torch": str(torch.__version__), "numpy": np.__version__},
            "update": self.update,
            "env_steps": self.env_steps,
            "model": self.networks.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.get_state(),
            "env_state": checkpoint.to_storable(self.env.get_state()),
            "lstm_state": [x.cpu() for x in self.lstm_state],
            "episode_start": torch.from_numpy(self.episode_start.copy()),
            "tracker": checkpoint.to_storable(self.tracker.state_dict()),
            "reward_transform": checkpoint.to_storable(self.reward_transform.state_dict()),
            "recorder": self.recorder.state_dict() if self.recorder else {},
        })

    def restore(self, files: RunFiles, columns: list[str], device: torch.device) -> None:
        """Continue from ``files.checkpoint``, cutting the logs back to it: the metrics rows and
        logged episodes a killed run wrote after it go, so the files end as an uninterrupted
        run's would.

        Every file is checked before any is changed: CheckpointError, RunDirError (metrics.csv)
        or TrajectoryFileError naming a damaged file or one of another run.
        """
        saved = checkpoint.load_for_resume(files.checkpoint, self.config, map_location=device)
        metrics_kept = rundir.metrics_until(files.metrics, columns, saved["update"])
        try:
            self.networks.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            sampler_state = saved["sampler"]
            self.sampler.set_state(sampler_state.to(self.sampler.device) if device.type == "cpu"
                                   else sampler_state.cpu())
            self.env.set_state(checkpoint.from_storable(saved["env_state"]))
            self.lstm_state = tuple(x.to(device) for x in saved["lstm_state"])
            self.episode_start = saved["episode_start"].numpy().copy()
            self.tracker.load_state_dict(checkpoint.from_storable(saved["tracker"]))
            self.reward_transform.load_state_dict(checkpoint.from_storable(saved["reward_transform"]))
            if self.recorder:
                self.recorder.load_state_dict(saved["recorder"])
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as error:
            raise checkpoint.CheckpointError(
                f"{files.checkpoint}: does not fit this run ({type(error).__name__}: {error})") from error
        self.update, self.env_steps = saved["update"], saved["env_steps"]
        if self.recorder:
            self.recorder.resume(self.update)  # opens trajectories.h5: a damaged one fails here, first
        rundir.atomic_write(files.metrics, metrics_kept)


def train(config: Config, *, resume: bool = False, on_update=None, max_updates: int | None = None,
          track: str = "none", project: str = "ssdinfluence", on_tracking=None) -> TrainResult:
    """Train ``config`` in ``config.out`` (resuming from its checkpoint if ``resume``).

    ``on_update(row)`` is called after every update with the metrics row (a dict). ``track``
    (``tensorboard`` or ``wandb``, W&B ``project``) also sends every row to a tracker
    (:mod:`~ssdinfluence.tracking`), opened once the run directory is this process's, and
    ``on_tracking(description)`` says where it writes. A first SIGINT/SIGTERM stops after the
    current update with a checkpoint written.

    Raises ValueError if the device is not there or the rollout would not fit its memory,
    before anything is written; :class:`~ssdinfluence.rundir.RunDirError` if another trainer
    holds ``config.out`` (nothing is written there, a tracker's files included); on resume,
    :class:`~ssdinfluence.checkpoint.CheckpointError`, ``RunDirError`` or
    :class:`~ssdinfluence.trajectories.TrajectoryFileError` naming a damaged or foreign file,
    before any file is changed; :class:`~ssdinfluence.rundir.DiskFullError` when the disk fills
    up (the last checkpoint stays).
    """
    from .tracking import open_tracker

    device = training_device(config)
    with rundir.locked(config.out) as files:
        tracker = open_tracker(track, config, project=project)
        try:
            if tracker and on_tracking:
                on_tracking(tracker.description)
            log = on_update
            if tracker:
                def log(row):
                    tracker.log(row)
                    if on_update:
                        on_update(row)
            return _train(config, files, device, resume, log, max_updates)
        finally:
            if tracker:
                tracker.close()


def training_device(config: Config) -> torch.device:
    """The device ``config`` trains on. ValueError if CUDA is asked for but absent, the rollout
    would not fit the GPU's memory, or ``config.threads`` is more than this machine's cores can
    use (:func:`~ssdinfluence.threads.check_thread_count`); :func:`~ssdinfluence.config.validate`
    checks the host's memory, without torch (a sweep driver validates trials that may train
    elsewhere, on other machines)."""
    threads.check_thread_count(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda":
        check_memory(config, torch.cuda.get_device_properties(device).total_memory, "GPU memory")
    return device


def _train(config: Config, files: RunFiles, device: torch.device, resume: bool, on_update,
           max_updates: int | None) -> TrainResult:
    rundir.remove_temp_files(files)  # a killed writer's, which may fill the disk

    # --- threads and random streams --------------------------------------------------------
    cores = threads.configure(config.threads)  # the update's torch threads; the rollout's may be fewer
    rollout_threads = config.threads or threads.rollout_torch_threads(cores, config.num_envs)
    torch.manual_seed(config.seed)  # initial weights
    sampler = torch.Generator(device=device).manual_seed(config.seed + 1)  # actions, minibatches

    # --- env, policies, optimiser: the state a checkpoint holds ---------------------------
    env = make(config.env, num_envs=config.num_envs, num_agents=config.agents, seed=config.seed,
               **config.env_kwargs)
    B, N, T = env.num_envs, env.num_agents, config.rollout_length
    policy = make_policies(config, env.num_actions, device)
    optimizer = torch.optim.Adam(policy.networks.parameters(), lr=config.lr, eps=1e-5)
    run = TrainState(config, policy.networks, optimizer, sampler, env, EpisodeTracker(B, N),
                     make_reward_transform(config.reward_transform, B, N, **_transform_params(config)),
                     _make_recorder(config, env, files, policy), policy.initial_state(B, device),
                     episode_start=np.ones(B, dtype=bool))
    obs, info = env.reset()
    columns = metric_columns(N, config.model, config.env)
    if resume:
        run.restore(files, columns, device)
        obs, info = env.observe()
    config.save(files.config)  # after a resume's checks: a refused resume changes nothing
    rollout = Rollout(T, B, N, env.observation_shape, run.lstm_state, config.bptt_length, device)
    cleans = _cleans(config.env)
    waste_now = np.zeros(B)  # [B]: the river's waste after each step (Cleanup)
    beams = BeamTracker(N, FIRE, CLEAN if cleans else None)  # beam and hit rates of each update's rollout
    metrics = rundir.MetricsLog(files.metrics, columns, append=resume)

    total_updates = math.ceil(config.steps / config.steps_per_update)
    anneal_steps = config.lr_anneal_steps or config.steps
    started, row = time.perf_counter(), {}
    try:
        with stop_on_signals() as stop:
            while (run.update < total_updates and not stop["stop"]
                   and (max_updates is None or run.update < max_updates)):
                update_start = time.perf_counter()
                timers = dict.fromkeys(TIMERS, 0.0)
                lr = linear_schedule(config.lr, config.lr_end, run.env_steps / anneal_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                beta = influence_beta(run.env_steps, config.influence_weight, config.influence_ramp_steps,
                                      config.influence_schedule) if policy.rewards_influence else 0.0
                finished = []  # the episodes this update ended (EpisodeTracker results)
                waste = 0.0  # Cleanup: the river's polluted fraction, summed over the rollout's steps
                influence_sum, pairs_sum = torch.zeros(N, device=device), torch.zeros(N, N, device=device)

                # --- 1. rollout -----------------------------------------------------------
                with torch.no_grad(), threads.torch_threads(rollout_threads):
                    # obs and info are the env's own buffers, which every env step rewrites in place
                    acting = _act_double_buffered if config.double_buffer else _act
                    for t, step, actions_np, rewards, truncated in acting(run, policy, rollout, obs, info, timers):
                        tic = time.perf_counter()
                        trained = run.reward_transform(rewards, run.episode_start)
                        rollout.store_rewards(t, trained, truncated)
                        if step.influence is not None:
                            step = _mix_influence(config, policy, rollout, t, step, beta)
                            influence_sum += step.influence.sum(0)
                            pairs_sum += step.influence_pairs.sum(0)
                        run.env_steps += B
                        ended = run.tracker.update(rewards, truncated)
                        beams.update(actions_np, info["hits"])
                        if cleans:
                            waste += run.env.waste_fraction(waste_now).mean()
                        if ended is not None:
                            finished.append(ended)
                        if run.recorder:
                            run.recorder.after_step(actions_np, rewards, truncated, ended, run.env_steps, run.update,
                                                    step)
                        run.episode_start = truncated.copy()
                        timers["logging"] += time.perf_counter() - tic

                    # --- 2. advantages --------------------------------------------------------
                    tic = time.perf_counter()
                    next_obs, next_prev, next_start = rollout.stage_next(obs, info, run.episode_start)
                    bootstrap = policy.values(next_obs, next_prev, run.lstm_state, next_start)
                    advantages, returns = gae(rollout.rewards, rollout.values, rollout.done, bootstrap.values.T,
                                              config.gamma, config.gae_lambda)
                    timers["forward"] += time.perf_counter() - tic

                # --- 3. update ----------------------------------------------------------------
                tic = time.perf_counter()
                batch = rollout.batch(advantages, returns)
                batch.update(policy.prepare_update({**batch, "rewards": rollout.rewards, "dones": rollout.done},
                                                   bootstrap, beta))
                with threads.torch_threads(cores):
                    losses = _update(config, policy, optimizer, sampler, batch, rollout.lstm_states, run.update + 1)
                timers["backward"] += time.perf_counter() - tic
                run.update += 1

                # --- 4. log, then checkpoint (a row is never missing from a resumed run) ---------
                elapsed = time.perf_counter() - update_start
                row = _metrics_row(run.update, run.env_steps, time.perf_counter() - started, B * T / elapsed, lr,
                                   finished, losses, timers, N)
                row.update(beams.columns())
                if cleans:
                    row["river_waste"] = float(waste / T)
                if policy.computes_influence:
                    row.update(_influence_columns(influence_sum / (T * B), pairs_sum / (T * B), beta))
                metrics.write(row)
                last_update = run.update >= total_updates or stop["stop"] or run.update == max_updates
                if run.update % config.checkpoint_every == 0 or last_update:
                    run.save(files.checkpoint)
                if run.update % threads.RELEASE_EVERY == 0:
                    threads.release_freed_memory()  # the fragmented heap's free pages (threads.py)
                if on_update:
                    on_update(row)
    finally:
        metrics.close()
        if run.recorder:
            run.recorder.close()
    return TrainResult(files.root, run.update, run.env_steps, run.update < total_updates, row)


def _act(run: TrainState, policy, rollout: Rollout, obs, info: dict, timers: dict):
    """The rollout's steps for the whole batch at once: yields ``(t, step, actions [B, N],
    rewards, truncated)`` after each env step, with the policy's outputs stored (``obs`` and
    ``info``: the env's buffers, which hold the step's results)."""
    for t in range(rollout.length):
        tic = time.perf_counter()
        inputs = rollout.stage_inputs(t, obs, info, run.episode_start, run.lstm_state)
        step = policy.act(*inputs[:3], run.lstm_state, inputs[3], run.sampler)
        rollout.store_outputs(t, step)
        run.lstm_state = step.state
        actions_np = step.actions.T.cpu().numpy()
        timers["forward"] += time.perf_counter() - tic

        tic = time.perf_counter()
        if run.recorder:
            run.recorder.before_step(obs)
        _, rewards, _, truncated, _ = run.env.step(actions_np)
        timers["env"] += time.perf_counter() - tic
        yield t, step, actions_np, rewards, truncated


def _act_double_buffered(run: TrainState, policy, rollout: Rollout, obs, info: dict, timers: dict):
    """:func:`_act` with the batch in two halves, so that the env steps one half on the CPU
    while the device evaluates the policy on the other (``Config.double_buffer``).

    Step t of half 1 is launched before half 0's env step and step t + 1 of half 0 before half
    1's: with CUDA's asynchronous launches, the CPU waits only for the half it steps next. Each
    half's actions come to the host through their own pinned buffer and event
    (:class:`_HostActions`), so no wait covers the other half's work. The env steps each half
    exactly as it steps the whole batch (its envs' random streams are their own); the actions
    are sampled half by half, so a run differs from one without double buffering, and is
    itself reproducible.
    """
    env, B = run.env, run.env.num_envs
    halves = (slice(0, B // 2), slice(B // 2, B))
    host = [_HostActions(rollout.device, (B // 2, env.num_agents)) for _ in halves]

    def launch(i, t, state, starts, obs, info):  # half i's step t, on its way
        inputs = rollout.stage_inputs(t, obs, info, starts, state, envs=halves[i])
        step = policy.act(*inputs[:3], state, inputs[3], run.sampler)
        host[i].fetch(step.actions.T)
        return step

    tic = time.perf_counter()
    pending = [launch(i, 0, tuple(x[:, half] for x in run.lstm_state), run.episode_start[half], obs, info)
               for i, half in enumerate(halves)]
    timers["forward"] += time.perf_counter() - tic
    for t in range(rollout.length):
        if run.recorder:
            run.recorder.before_step(obs)  # both halves still show s_t here
        actions_np = np.empty((B, env.num_agents), np.int64)
        done = []
        for i, half in enumerate(halves):
            tic = time.perf_counter()
            actions_np[half] = host[i].wait()
            timers["forward"] += time.perf_counter() - tic
            tic = time.perf_counter()
            _, rewards, _, truncated, _ = env.step(actions_np[half], envs=half)
            timers["env"] += time.perf_counter() - tic
            done.append(pending[i])
            if t + 1 < rollout.length:
                tic = time.perf_counter()
                pending[i] = launch(i, t + 1, pending[i].state, truncated[half], obs, info)
                timers["forward"] += time.perf_counter() - tic
        step = _joined(*done)
        rollout.store_outputs(t, step)
        run.lstm_state = step.state
        yield t, step, actions_np, rewards, truncated


class _HostActions:
    """One half's actions ``[B/2, N]`` on their way to the host: on CUDA a copy into this
    half's pinned buffer and an event after it, so that :meth:`wait` waits for nothing else
    queued on the device (a plain ``.cpu()`` would wait for the other half too)."""

    def __init__(self, device: torch.device, shape: tuple):
        self.cuda = device.type == "cuda"
        self.buffer = torch.empty(shape, dtype=torch.long, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None

    def fetch(self, actions: torch.Tensor) -> None:
        self.buffer.copy_(actions, non_blocking=self.cuda)
        if self.cuda:
            self.event.record()

    def wait(self) -> np.ndarray:
        if self.cuda:
            self.event.synchronize()
        return self.buffer.numpy()


def _joined(first: ActOutput, second: ActOutput) -> ActOutput:
    """The :class:`ActOutput` of the whole batch from those of its two halves (in env order)."""
    def cat(a, b, dim):
        return None if a is None else torch.cat([a, b], dim)

    return ActOutput(cat(first.actions, second.actions, 1), cat(first.logprobs, second.logprobs, 1),
                     cat(first.values, second.values, 1),
                     tuple(cat(a, b, 1) for a, b in zip(first.state, second.state, strict=True)),
                     cat(first.influence, second.influence, 0),
                     cat(first.influence_pairs, second.influence_pairs, 0),
                     {name: cat(x, second.extras[name], 0) for name, x in first.extras.items()})


def _mix_influence(config: Config, policy, rollout: Rollout, t: int, step: ActOutput, beta: float) -> ActOutput:
    """Step t's influence reward ``c [B, N]``, clipped to [-clip, clip] as the reference does (PMI
    can be < 0), into the rollout: the trained reward becomes ``extrinsic_weight * e + beta * c``
    where it rewards actions, else ``c`` is stored for the head it rewards (the messages: see
    ``Policy.prepare_update``). Returns ``step`` with the clipped influence (what is logged)."""
    influence = step.influence
    if config.influence_clip > 0:
        influence = influence.clamp(-config.influence_clip, config.influence_clip)
    if policy.influence_rewards_actions:
        rollout.rewards[t] = config.extrinsic_weight * rollout.rewards[t] + beta * influence
    else:
        rollout.store_extra(t, "influence", influence)
    return step._replace(influence=influence)


class Rollout:
    """One rollout's tensors on the device (names and shapes in the module docstring), and the
    copies of each step's numpy env outputs into them."""

    def __init__(self, T: int, B: int, N: int, obs_shape: tuple, lstm_state: tuple, bptt_length: int, device):
        self.obs = torch.zeros((T, B, N) + obs_shape, dtype=torch.uint8, device=device)
        self.actions = torch.zeros((T, B, N), dtype=torch.long, device=device)
        self.prev_actions = torch.zeros((T, B, N), dtype=torch.long, device=device)
        self.logprobs, self.values, self.rewards = (torch.zeros((T, B, N), device=device) for _ in range(3))
        self.episode_start = torch.zeros((T, B), dtype=torch.bool, device=device)
        self.done = torch.zeros((T, B), dtype=torch.bool, device=device)
        self.visible = torch.zeros((T, B, N, N), dtype=torch.bool, device=device)
        self.extras = {}  # every step writes every extra, so they are reused from update to update
        self.lstm_states = [torch.zeros((T // bptt_length,) + tuple(x.shape), device=device) for x in lstm_state]
        self.length, self.bptt_length, self.device = T, bptt_length, device
        # the policy inputs after the rollout's last step, for the bootstrap values
        self.next_obs, self.next_prev = self.obs[0].clone(), self.prev_actions[0].clone()
        self.next_start = self.episode_start[0].clone()
        self.staging = _Staging(device)

    def stage_inputs(self, t: int, obs, info: dict, episode_start, lstm_state, envs: slice = slice(None)):
        """Step t's policy inputs of the envs ``envs`` (all by default) into the rollout (and
        their LSTM state at a chunk start). ``obs`` and ``info`` are the env's whole arrays,
        ``episode_start`` and ``lstm_state`` (tensors [N, E, H]) those envs' alone. Returns
        their device tensors ``obs, prev_actions, visible, episode_start``."""
        if t % self.bptt_length == 0:
            for buf, x in zip(self.lstm_states, lstm_state, strict=True):
                buf[t // self.bptt_length][:, envs] = x
        def put(name, array, dest):  # each part of the batch has its own pinned buffers
            return self.staging.put((name, envs.start), array, dest)

        obs_t = put("obs", obs[envs], self.obs[t, envs])  # the env's views straight into the rollout
        prev_t = put("prev_actions", info["prev_actions"][envs], self.prev_actions[t, envs])
        start_t = put("episode_start", episode_start, self.episode_start[t, envs])
        visible_t = put("visible", info["visible"][envs], self.visible[t, envs])
        return obs_t, prev_t, visible_t, start_t

    def store_outputs(self, t: int, step: ActOutput) -> None:
        for name, x in step.extras.items():
            self.store_extra(t, name, x)
        self.actions[t], self.logprobs[t], self.values[t] = step.actions.T, step.logprobs.T, step.values.T

    def store_extra(self, t: int, name: str, x: torch.Tensor) -> None:
        if name not in self.extras:
            self.extras[name] = torch.zeros((self.obs.shape[0], *x.shape), dtype=x.dtype, device=x.device)
        self.extras[name][t] = x

    def store_rewards(self, t: int, rewards, truncated) -> None:
        """The (transformed) env rewards ``[B, N]`` and episode ends ``[B]`` of step t.

        Pinned buffers alternate between even and odd steps: with double buffering the last
        wait before step t + 1's copy may precede step t's, never step t - 1's."""
        self.staging.put(("rewards", t % 2), rewards, self.rewards[t])
        self.staging.put(("done", t % 2), truncated, self.done[t])

    def stage_next(self, obs, info: dict, episode_start):
        """The policy inputs after the last step: ``obs, prev_actions, episode_start``."""
        put = self.staging.put
        return (put("obs", obs, self.next_obs), put("prev_actions", info["prev_actions"], self.next_prev),
                put("episode_start", episode_start, self.next_start))

    def batch(self, advantages, returns) -> dict:
        """The update's inputs by name, each ``[T, B, ...]``."""
        return {"obs": self.obs, "prev_actions": self.prev_actions, "actions": self.actions,
                "episode_start": self.episode_start, "visible": self.visible, "old_logprobs": self.logprobs,
                "advantages": advantages, "returns": returns, **_next_actions(self.actions, self.done),
                **self.extras}


def _update(config, policy, optimizer, sampler, rollout: dict, state_bufs, update: int):
    """PPO epochs over minibatches of BPTT sequences, or one A2C step over all of them
    (``update``: its number, 1-based, for :class:`TrainingDiverged`).

    The rollout [T, B] is cut into S = (T / L) * B sequences of L steps; sequence s = c * B + b
    is chunk c of env b and starts from the stored LSTM states ``state_bufs[i][c][:, b]``
    (``Rollout.lstm_states``).
    """
    T, B, N = rollout["actions"].shape
    L = config.bptt_length
    C = T // L

    def chunks(x):  # [T, B, ...] -> [L, S, ...]
        return x.reshape(C, L, B, *x.shape[2:]).transpose(0, 1).reshape(L, C * B, *x.shape[2:])

    batch = {key: chunks(value) for key, value in rollout.items()}
    states = [buf.permute(1, 0, 2, 3).reshape(N, C * B, -1) for buf in state_bufs]  # [N, S, H] each
    ppo = config.algo == "ppo"
    epochs, minibatches = (config.ppo_epochs, config.ppo_minibatches) if ppo else (1, 1)
    totals, count, stopped = {}, 0, False
    for _ in range(epochs):
        if stopped:
            break
        order = torch.randperm(C * B, generator=sampler, device=sampler.device).to(batch["obs"].device)
        for mb in order.chunk(minibatches):
            part = {key: value[:, mb] for key, value in batch.items()}
            logits, values, aux = policy.sequence(part, tuple(x[:, mb] for x in states))
            adv = normalise_per_agent(part["advantages"]) if config.normalise_advantages else part["advantages"]
            terms = policy_loss_terms(logits.permute(0, 2, 1, 3), part["actions"], part["old_logprobs"], adv,
                                      part["returns"], values.transpose(1, 2), clip=config.ppo_clip if ppo else None,
                                      value_coef=config.value_coef, entropy_coef=config.entropy_coef,
                                      huber_delta=config.value_huber_delta)
            # KL early stop: approx_kl compares the policy after this update's steps so far with
            # the rollout's; past the limit, this and the remaining minibatches are skipped.
            if count and config.target_kl > 0 and terms.approx_kl.item() > 1.5 * config.target_kl:
                stopped = True
                break
            loss = terms.loss if aux is None else terms.loss + aux["loss"]
            _check_finite(update, {"policy loss": terms.policy_loss, "value loss": terms.value_loss,
                                   "entropy": terms.entropy, **({"auxiliary loss": aux["loss"]} if aux else {})})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms = clip_grad_norm_per_agent(list(policy.networks.parameters()), N, config.max_grad_norm)
            _check_finite(update, {"gradient": norms})  # before the step: the weights stay finite
            optimizer.step()
            for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                totals[name] = totals.get(name, 0.0) + getattr(terms, name).item()
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + norms.mean().item()
            for name, value in (aux or {}).items():
                if name != "loss":
                    totals[name] = totals.get(name, 0.0) + value
            count += 1
    return {k: v / count for k, v in totals.items()}


class TrainingDiverged(RuntimeError):
    """A loss term or gradient became NaN or infinite: training stops before the optimiser
    takes the step, so the weights and the last checkpoint stay finite."""


def _check_finite(update: int, terms: dict) -> None:
    """TrainingDiverged naming the update and the first of ``terms`` (name -> tensor) that is
    not finite."""
    for name, value in terms.items():
        if not bool(torch.isfinite(value).all()):
            raise TrainingDiverged(f"update {update}: the {name} is not finite ({value.detach().flatten()[:5].tolist()}); "
                                   f"training stopped before the step, the last checkpoint is kept. Lower lr or the "
                                   f"loss coefficients")


def _next_actions(actions_buf, done_buf):
    """Targets for models of other agents: the action at t + 1 of every agent, ``[T, B, N]``,
    valid (``[T, B]``) where step t did not end an episode and t + 1 is in this rollout."""
    next_actions = torch.roll(actions_buf, -1, dims=0)
    next_valid = ~done_buf.clone()
    next_valid[-1] = False
    return {"next_actions": next_actions, "next_valid": next_valid}


class _Staging:
    """Copies numpy env outputs into device tensors once per step (pinned memory on CUDA)."""

    def __init__(self, device):
        self.device = device
        self.pinned = {}  # name -> its own pinned host tensor

    def put(self, name, array, dest):
        """Copy ``array`` into ``dest`` (e.g. a rollout slot) and return ``dest``; no allocation.

        Each name (any hashable key) has its own pinned buffer, reused once per step: the wait
        for that step's actions comes after the copy on the device's queue, so an asynchronous
        copy from it is done before it is overwritten.
        """
        source = torch.from_numpy(np.asarray(array))
        if self.device.type == "cuda":
            if name not in self.pinned:
                self.pinned[name] = torch.empty(dest.shape, dtype=dest.dtype, pin_memory=True)
            source = self.pinned[name].copy_(source)
        return dest.copy_(source, non_blocking=True)


def _transform_params(config: Config) -> dict:
    if config.reward_transform == "prosocial":
        return {"eta": config.prosocial_eta}
    if config.reward_transform == "inequity":
        return {"alpha": config.inequity_alpha, "beta": config.inequity_beta, "gamma": config.gamma,
                "lam": config.inequity_lambda}
    return {}


def _cleans(env: str) -> bool:
    """Whether ``env``'s agents have a cleaning beam (and a river whose waste is logged)."""
    return env == "cleanup"


def metric_columns(num_agents: int, model: str = "baseline", env: str = "cleanup") -> list[str]:
    """The columns of ``metrics.csv`` for ``Config.model`` ``model`` on ``env``."""
    policy = policy_class(model)
    influence = []
    if policy.computes_influence:
        influence = (["influence_weight"] + [f"influence_agent_{k}" for k in range(num_agents)]
                     + [f"influence_{k}_on_{j}" for k in range(num_agents) for j in range(num_agents) if j != k])
    return (["update", "env_steps", "time_s", "sps", "lr", "episodes", "collective_return"]
            + [f"return_agent_{k}" for k in range(num_agents)] + list(OUTCOME_KEYS)
            + ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm"]
            + [f"{name}_s" for name in TIMERS] + BeamTracker.column_names(num_agents, _cleans(env))
            + (["river_waste"] if _cleans(env) else []) + influence
            + list(policy.metric_columns))


def _metrics_row(update, env_steps, time_s, sps, lr, finished, losses, timers, N) -> dict:
    row = {"update": update, "env_steps": env_steps, "time_s": round(time_s, 3), "sps": round(sps, 1), "lr": lr}
    if finished:
        returns = np.concatenate([f["returns"] for f in finished])  # [E, N]
        row["episodes"] = len(returns)
        row["collective_return"] = float(returns.sum(1).mean())
        for k in range(N):
            row[f"return_agent_{k}"] = float(returns[:, k].mean())
        for name in OUTCOME_KEYS:
            values = np.concatenate([f[name] for f in finished])
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    else:
        row["episodes"] = 0
        for name in ["collective_return", *[f"return_agent_{k}" for k in range(N)], *OUTCOME_KEYS]:
            row[name] = float("nan")
    row.update(losses)
    row.update({f"{name}_s": round(value, 4) for name, value in timers.items()})
    return row


def _influence_columns(per_agent, pairs, beta) -> dict:
    """Mean influence per step: exerted by each agent ``[N]`` and per pair ``[N, N]``."""
    N = len(per_agent)
    row = {"influence_weight": beta}
    row.update({f"influence_agent_{k}": float(per_agent[k]) for k in range(N)})
    row.update({f"influence_{k}_on_{j}": float(pairs[k, j]) for k in range(N) for j in range(N) if j != k})
    return row


def _make_recorder(config, env, files, policy):
    if not config.logged_envs:
        return None
    from .recorder import TrajectoryRecorder

    return TrajectoryRecorder(files.trajectories, env, config, influence=policy.computes_influence,
                              messages=policy.logs_messages)
