"""The trainer: N independent agents learning with PPO or A2C on a batch of envs.

Read :func:`train` top to bottom: set up, (resume,) then repeat {collect a rollout, estimate
advantages, update, log, checkpoint} until the step budget is spent or a stop is asked for.

Tensor names and shapes (T rollout steps, B envs, N agents, A actions, L BPTT length):
``obs_buf [T, B, N, 15, 15, 3] uint8``, ``actions_buf [T, B, N] int64``, ``logprob_buf``,
``value_buf``, ``reward_buf`` ``[T, B, N] float32``, ``start_buf [T, B] bool`` (step t opens an
episode: the LSTM state is zeroed before it), ``done_buf [T, B] bool`` (step t ended one),
``visible_buf [T, B, N, N] bool``, ``state_bufs``: each LSTM state tensor at every BPTT chunk
start, ``[T // L, N, B, H]``.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import torch

from . import __version__, checkpoint, rundir
from .algos import clip_grad_norm_per_agent, gae, linear_schedule, normalise_per_agent, policy_loss_terms
from .config import Config
from .envs import make
from .influence import influence_weight
from .metrics import EpisodeTracker
from .policies import make_policies
from .rewards import make_reward_transform
from .rundir import RunFiles

SOCIAL = ("efficiency", "equality", "sustainability", "peace")
INFLUENCE_MODELS = ("influence", "moa", "moa-baseline", "comm", "comm-baseline")
BASELINES = ("moa-baseline", "comm-baseline")  # same architecture, influence weight 0
TIMERS = ("env", "forward", "backward", "logging")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available (use --device auto or cpu)")
    return torch.device(name)


@contextmanager
def stop_on_signals():
    """Yield a flag set by the first SIGINT/SIGTERM; a second SIGINT interrupts at once."""
    flag = {"stop": False}
    if not _in_main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class TrainResult:
    run_dir: Path
    updates: int
    env_steps: int
    stopped_early: bool
    last_row: dict = field(default_factory=dict)


def train(config: Config, *, resume: bool = False, on_update=None, max_updates: int | None = None) -> TrainResult:
    """Train ``config`` in ``config.out`` (resuming from its checkpoint if ``resume``).

    ``on_update(row)`` is called after every update with the metrics row (a dict). A first
    SIGINT/SIGTERM stops after the current update with a checkpoint written.

    Raises :class:`~ssdinfluence.rundir.RunDirError` if another process trains in
    ``config.out``; on resume, :class:`~ssdinfluence.checkpoint.CheckpointError`,
    ``RunDirError`` or :class:`~ssdinfluence.trajectories.TrajectoryFileError` naming a damaged
    or foreign file, before any file is changed; :class:`~ssdinfluence.rundir.DiskFullError`
    when the disk fills up (the last checkpoint stays).
    """
    with rundir.locked(config.out) as files:
        return _train(config, files, resume, on_update, max_updates)


def _train(config: Config, files: RunFiles, resume: bool, on_update, max_updates) -> TrainResult:
    rundir.remove_temp_files(files)

    # --- devices, threads and random streams ---------------------------------------------
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
        numba.set_num_threads(min(config.threads, numba.config.NUMBA_NUM_THREADS))
    torch.manual_seed(config.seed)  # initial weights
    sampler = torch.Generator(device=device).manual_seed(config.seed + 1)  # actions, minibatches

    # --- env, model, optimiser ------------------------------------------------------------
    env = make(config.env, num_envs=config.num_envs, num_agents=config.agents, seed=config.seed,
               **config.env_kwargs)
    B, N, A = env.num_envs, env.num_agents, env.num_actions
    T, L = config.rollout_length, config.bptt_length
    policy = make_policies(config, A, device)
    model = policy.model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=1e-5)
    reward_transform = make_reward_transform(config.reward_transform, B, N, **_transform_params(config))
    tracker = EpisodeTracker(B, N)
    recorder = _make_recorder(config, env, files)

    # --- rollout storage ------------------------------------------------------------------
    obs_buf = torch.zeros((T, B, N) + env.observation_shape, dtype=torch.uint8, device=device)
    actions_buf = torch.zeros((T, B, N), dtype=torch.long, device=device)
    prev_actions_buf = torch.zeros((T, B, N), dtype=torch.long, device=device)
    logprob_buf, value_buf, reward_buf = (torch.zeros((T, B, N), device=device) for _ in range(3))
    start_buf = torch.zeros((T, B), dtype=torch.bool, device=device)
    done_buf = torch.zeros((T, B), dtype=torch.bool, device=device)
    visible_buf = torch.zeros((T, B, N, N), dtype=torch.bool, device=device)
    next_obs, next_prev, next_start = obs_buf[0].clone(), prev_actions_buf[0].clone(), start_buf[0].clone()
    staging = _Staging(device)

    # --- state carried from update to update ----------------------------------------------
    obs, info = env.reset()
    lstm_state = policy.initial_state(B, device)
    state_bufs = [torch.zeros((T // L,) + tuple(x.shape), device=device) for x in lstm_state]
    episode_start = np.ones(B, dtype=bool)
    update, env_steps = 0, 0
    columns = metric_columns(N, config.model)
    if resume:  # every file is checked before any is changed
        saved = checkpoint.load_for_resume(files.checkpoint, config, map_location=device)
        metrics_kept = rundir.metrics_until(files.metrics, columns, saved["update"])
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            sampler.set_state(saved["sampler"].to(sampler.device) if device.type == "cpu" else saved["sampler"].cpu())
            env.set_state(checkpoint.from_storable(saved["env_state"]))
            obs, info = env.observe()
            lstm_state = tuple(x.to(device) for x in saved["lstm_state"])
            episode_start = saved["episode_start"].numpy().copy()
            tracker.load_state_dict(checkpoint.from_storable(saved["tracker"]))
            reward_transform.load_state_dict(checkpoint.from_storable(saved["reward_transform"]))
            if recorder:
                recorder.load_state_dict(saved["recorder"])
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as error:
            raise checkpoint.CheckpointError(
                f"{files.checkpoint}: does not fit this run ({type(error).__name__}: {error})") from error
        update, env_steps = saved["update"], saved["env_steps"]
        if recorder:
            recorder.resume(update)
        rundir.atomic_write(files.metrics, metrics_kept)
    config.save(files.config)
    metrics = rundir.MetricsLog(files.metrics, columns, append=resume)

    total_updates = math.ceil(config.steps / config.steps_per_update)
    anneal_steps = config.lr_anneal_steps or config.steps
    started, row = time.perf_counter(), {}
    stopped_early = False
    try:
        with stop_on_signals() as stop:
            while update < total_updates and not stop["stop"]:
                if max_updates is not None and update >= max_updates:
                    break
                update_start = time.perf_counter()
                timers = dict.fromkeys(TIMERS, 0.0)
                lr = linear_schedule(config.lr, config.lr_end, env_steps / anneal_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                finished = []
                beta = 0.0 if config.model in BASELINES or not policy.influence else influence_weight(
                    env_steps, config.influence_weight, config.influence_ramp_steps, config.influence_schedule)
                extra_bufs = {}  # per-step tensors a policy adds (messages), [T, B, N]
                influence_sum = torch.zeros(N, device=device)
                pairs_sum = torch.zeros(N, N, device=device)

                # --- 1. rollout -----------------------------------------------------------
                with torch.no_grad():
                    for t in range(T):
                        tic = time.perf_counter()
                        if t % L == 0:
                            for buf, x in zip(state_bufs, lstm_state, strict=True):
                                buf[t // L] = x
                        obs_t = staging.put("obs", obs, obs_buf[t])  # the env's views straight into the rollout
                        prev_t = staging.put("prev_actions", info["prev_actions"], prev_actions_buf[t])
                        start_t = staging.put("episode_start", episode_start, start_buf[t])
                        visible_t = staging.put("visible", info["visible"], visible_buf[t])
                        actions, logprobs, value, lstm_state, influence, pairs, extras = policy.act(
                            obs_t, prev_t, visible_t, lstm_state, start_t, sampler)
                        for name, x in extras.items():
                            if name not in extra_bufs:
                                extra_bufs[name] = torch.zeros((T, *x.shape), dtype=x.dtype, device=device)
                            extra_bufs[name][t] = x
                        actions_buf[t], logprob_buf[t], value_buf[t] = actions.T, logprobs.T, value.T
                        actions_np = actions.T.cpu().numpy()
                        timers["forward"] += time.perf_counter() - tic

                        tic = time.perf_counter()
                        if recorder:
                            recorder.before_step(obs)
                        obs, rewards, _, truncated, info = env.step(actions_np)
                        trained = reward_transform(rewards, episode_start)
                        timers["env"] += time.perf_counter() - tic

                        tic = time.perf_counter()
                        staging.put("rewards", trained, reward_buf[t])
                        if influence is not None:
                            if config.influence_clip > 0:  # as the reference: c in [-clip, clip] (PMI can be < 0)
                                influence = influence.clamp(-config.influence_clip, config.influence_clip)
                            if policy.influence_rewards_actions:
                                reward_buf[t] = config.extrinsic_weight * reward_buf[t] + beta * influence
                            else:  # it rewards another head (messages): see policy.prepare_update
                                if "influence" not in extra_bufs:
                                    extra_bufs["influence"] = torch.zeros((T, B, N), device=device)
                                extra_bufs["influence"][t] = influence
                            influence_sum += influence.sum(0)
                            pairs_sum += pairs.sum(0)
                        staging.put("done", truncated, done_buf[t])
                        env_steps += B
                        ended = tracker.update(rewards, truncated)
                        if ended is not None:
                            finished.append(ended)
                        if recorder:
                            logged = {name: x.cpu().numpy() for name, x in extras.items() if name == "messages"}
                            if influence is not None:
                                logged.update(influence=influence.cpu().numpy(), influence_pairs=pairs.cpu().numpy())
                            recorder.after_step(actions_np, rewards, truncated, ended, env_steps, update, logged)
                        episode_start = truncated.copy()
                        timers["logging"] += time.perf_counter() - tic

                    # --- 2. advantages --------------------------------------------------------
                    tic = time.perf_counter()
                    last_value = policy.values(staging.put("obs", obs, next_obs),
                                               staging.put("prev_actions", info["prev_actions"], next_prev),
                                               lstm_state, staging.put("episode_start", episode_start, next_start))
                    advantages, returns = gae(reward_buf, value_buf, done_buf, last_value.T,
                                              config.gamma, config.gae_lambda)
                    timers["forward"] += time.perf_counter() - tic

                # --- 3. update ----------------------------------------------------------------
                tic = time.perf_counter()
                rollout = {"obs": obs_buf, "prev_actions": prev_actions_buf, "actions": actions_buf,
                           "episode_start": start_buf, "visible": visible_buf, "old_logprobs": logprob_buf,
                           "advantages": advantages, "returns": returns, **_next_actions(actions_buf, done_buf),
                           **extra_bufs}
                if hasattr(policy, "prepare_update"):
                    rollout.update(policy.prepare_update({**rollout, "rewards": reward_buf, "dones": done_buf}, beta))
                losses = _update(config, policy, optimizer, sampler, rollout, state_bufs)
                timers["backward"] += time.perf_counter() - tic
                update += 1

                # --- 4. log, then checkpoint (a row is never missing from a resumed run) ---------
                elapsed = time.perf_counter() - update_start
                row = _metrics_row(update, env_steps, time.perf_counter() - started, B * T / elapsed, lr,
                                   finished, losses, timers, N)
                if policy.influence:
                    row.update(_influence_columns(influence_sum / (T * B), pairs_sum / (T * B), beta))
                metrics.write(row)
                last_update = update >= total_updates or stop["stop"] or update == max_updates
                if update % config.checkpoint_every == 0 or last_update:
                    _save_checkpoint(files, config, model, optimizer, sampler, env, lstm_state, episode_start,
                                     tracker, reward_transform, recorder, update, env_steps)
                if on_update:
                    on_update(row)
            stopped_early = update < total_updates
    finally:
        metrics.close()
        if recorder:
            recorder.close()
    return TrainResult(files.root, update, env_steps, stopped_early, row)


def _update(config, policy, optimizer, sampler, rollout: dict, state_bufs):
    """PPO epochs over minibatches of BPTT sequences, or one A2C step over all of them.

    The rollout [T, B] is cut into S = (T / L) * B sequences of L steps; sequence s = c * B + b
    is chunk c of env b and starts from the stored LSTM states ``state_bufs[i][c][:, b]``.
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
    totals, count = {}, 0
    for _ in range(epochs):
        order = torch.randperm(C * B, generator=sampler, device=sampler.device).to(batch["obs"].device)
        for mb in order.chunk(minibatches):
            part = {key: value[:, mb] for key, value in batch.items()}
            logits, values, aux = policy.sequence(part, tuple(x[:, mb] for x in states))
            adv = normalise_per_agent(part["advantages"]) if config.normalise_advantages else part["advantages"]
            terms = policy_loss_terms(logits.permute(0, 2, 1, 3), part["actions"], part["old_logprobs"], adv,
                                      part["returns"], values.transpose(1, 2), clip=config.ppo_clip if ppo else None,
                                      value_coef=config.value_coef, entropy_coef=config.entropy_coef)
            loss = terms.loss if aux is None else terms.loss + aux["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms = clip_grad_norm_per_agent(list(policy.model.parameters()), N, config.max_grad_norm)
            optimizer.step()
            for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
                totals[name] = totals.get(name, 0.0) + getattr(terms, name).item()
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + norms.mean().item()
            for name, value in (aux or {}).items():
                if name != "loss":
                    totals[name] = totals.get(name, 0.0) + value
            count += 1
    return {k: v / count for k, v in totals.items()}


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

        Each name has its own pinned buffer, reused once per step: the step's ``actions.cpu()``
        synchronises, so an asynchronous copy from it is done before it is overwritten.
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


def metric_columns(num_agents: int, model: str = "baseline") -> list[str]:
    extra = []
    if model in INFLUENCE_MODELS:
        extra = (["influence_weight"] + [f"influence_agent_{k}" for k in range(num_agents)]
                 + [f"influence_{k}_on_{j}" for k in range(num_agents) for j in range(num_agents) if j != k])
    return (["update", "env_steps", "time_s", "sps", "lr", "episodes", "collective_return"]
            + [f"return_agent_{k}" for k in range(num_agents)] + list(SOCIAL)
            + ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm"]
            + [f"{name}_s" for name in TIMERS] + extra
            + (["moa_loss", "moa_accuracy"] if model in ("moa", "moa-baseline") else [])
            + (["message_policy_loss", "message_entropy"] if model in ("comm", "comm-baseline") else []))


def _metrics_row(update, env_steps, time_s, sps, lr, finished, losses, timers, N) -> dict:
    row = {"update": update, "env_steps": env_steps, "time_s": round(time_s, 3), "sps": round(sps, 1), "lr": lr}
    if finished:
        returns = np.concatenate([f["returns"] for f in finished])  # [E, N]
        row["episodes"] = len(returns)
        row["collective_return"] = float(returns.sum(1).mean())
        for k in range(N):
            row[f"return_agent_{k}"] = float(returns[:, k].mean())
        for name in SOCIAL:
            values = np.concatenate([f[name] for f in finished])
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    else:
        row["episodes"] = 0
        for name in ["collective_return", *[f"return_agent_{k}" for k in range(N)], *SOCIAL]:
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


def _save_checkpoint(files, config, model, optimizer, sampler, env, lstm_state, episode_start, tracker,
                     reward_transform, recorder, update, env_steps):
    checkpoint.save(files.checkpoint, {
        "config": config.to_dict(),
        "versions": {"ssdinfluence": __version__, "torch": str(torch.__version__), "numpy": np.__version__},
        "update": update,
        "env_steps": env_steps,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": sampler.get_state(),
        "env_state": checkpoint.to_storable(env.get_state()),
        "lstm_state": [x.cpu() for x in lstm_state],
        "episode_start": torch.from_numpy(episode_start.copy()),
        "tracker": checkpoint.to_storable(tracker.state_dict()),
        "reward_transform": checkpoint.to_storable(reward_transform.state_dict()),
        "recorder": recorder.state_dict() if recorder else {},
    })


def _make_recorder(config, env, files):
    if not config.logged_envs:
        return None
    from .recorder import TrajectoryRecorder

    return TrajectoryRecorder(files.trajectories, env, config, influence=config.model in INFLUENCE_MODELS,
                              messages=config.model in ("comm", "comm-baseline"))
