"""The trainer end to end: exact resume, learning, run directory contents."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from ssdinfluence import checkpoint
from ssdinfluence.algos import policy_loss_terms
from ssdinfluence.config import build_config
from ssdinfluence.train import metric_columns, train
from ssdinfluence.trajectories import TrajectoryReader

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
TIMING = {"time_s", "sps", "env_s", "forward_s", "backward_s", "logging_s"}


def tiny_config(out, **overrides):
    values = {"env": "harvest", "agents": 2, "num_envs": 2, "rollout_length": 16, "bptt_length": 8,
              "ppo_minibatches": 2, "ppo_epochs": 2, "steps": 4 * 32, "seed": 3, "out": str(out),
              "log_trajectories": "0,1", "log_every": 1, "checkpoint_every": 100, "threads": 0,
              "env_kwargs": {"horizon": 20}}
    values.update(overrides)
    return build_config(values)


def read_metrics(path):
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def read_log(path):
    with TrajectoryReader(path) as reader:
        index = reader.episodes()
        episodes = [reader.episode(k) for k in range(reader.num_episodes)]
    return index, episodes


@pytest.mark.parametrize(("model", "algo", "double_buffer"), [
    ("baseline", "ppo", False), ("visible", "a2c", False), ("influence", "ppo", False), ("moa", "a2c", False),
    ("comm", "ppo", False), ("comm", "ppo", True)])
def test_resume_is_bit_identical(tmp_path, model, algo, double_buffer):
    settings = {"model": model, "algo": algo, "double_buffer": double_buffer}
    straight = train(tiny_config(tmp_path / "straight", **settings))
    assert straight.updates == 4 and not straight.stopped_early
    first = train(tiny_config(tmp_path / "split", **settings), max_updates=2)
    assert first.updates == 2 and first.stopped_early
    second = train(tiny_config(tmp_path / "split", **settings), resume=True)
    assert second.updates == 4
    a = checkpoint.load(tmp_path / "straight")
    b = checkpoint.load(tmp_path / "split")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["sampler"], b["sampler"])
    assert read_metrics(tmp_path / "straight" / "metrics.csv") == read_metrics(tmp_path / "split" / "metrics.csv")
    index_a, episodes_a = read_log(tmp_path / "straight" / "trajectories.h5")
    index_b, episodes_b = read_log(tmp_path / "split" / "trajectories.h5")
    assert len(episodes_a) == len(episodes_b) == 6  # 2 logged envs x 3 finished episodes of 20 steps
    for key in index_a:
        np.testing.assert_array_equal(index_a[key], index_b[key])
    for ea, eb in zip(episodes_a, episodes_b, strict=True):
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key])


def test_resume_drops_what_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    config = tiny_config(tmp_path / "run", checkpoint_every=2)
    train(config, max_updates=3)  # checkpoint after update 2 (periodic) and 3 (the stop)
    saved = checkpoint.load(tmp_path / "run")
    assert saved["update"] == 3
    # pretend the process died after update 2's checkpoint: restore an older checkpoint file
    train(tiny_config(tmp_path / "older", checkpoint_every=2), max_updates=2)
    (tmp_path / "run" / "checkpoint.pt").write_bytes((tmp_path / "older" / "checkpoint.pt").read_bytes())
    train(config, resume=True)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    straight = train(tiny_config(tmp_path / "straight"))
    assert rows == read_metrics(tmp_path / "straight" / "metrics.csv")
    assert straight.updates == 4


def test_run_directory_contents(tmp_path):
    config = tiny_config(tmp_path / "run", log_observations=True)
    rows = []
    train(config, on_update=rows.append)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "checkpoint.pt", "trajectories.h5"}
    assert build_config(__import__("json").loads((run / "config.json").read_text())) == config
    metrics = read_metrics(run / "metrics.csv")
    assert len(metrics) == 4 and [int(r["env_steps"]) for r in metrics] == [32, 64, 96, 128]
    lrs = [float(r["lr"]) for r in metrics]
    assert lrs[0] == config.lr and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    finished = [r for r in metrics if int(r["episodes"]) > 0]
    assert finished and all(math.isfinite(float(r["collective_return"])) for r in finished)
    assert all(math.isfinite(float(r["policy_loss"])) for r in metrics)
    with TrajectoryReader(run / "trajectories.h5") as reader:
        episode = reader.episode(0)
        assert episode["observations"].shape == (20, 2, 15, 15, 3)
        assert episode["actions"].shape == (20, 2)
        np.testing.assert_allclose(reader.episodes()["returns"][0], episode["rewards"].sum(0))
        assert reader.config["model"] == "baseline"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["update"] == 4 and saved["env_steps"] == 128


def test_cleanup_runs_log_cleaning_and_the_rivers_waste(tmp_path):
    config = tiny_config(tmp_path / "run", env="cleanup", steps=2 * 32, log_trajectories="")
    train(config)
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    assert list(metrics[0]) == [c for c in metric_columns(2, "baseline", "cleanup") if c not in TIMING]
    for row in metrics:
        rates = [float(row[f"clean_rate_agent_{k}"]) for k in range(2)]
        assert all(0 <= r <= 1 for r in rates) and sum(rates) > 0  # an untrained policy cleans at times
        assert 0 < float(row["river_waste"]) < 1  # the map starts part-polluted
    assert "river_waste" not in metric_columns(2, "baseline", "harvest")


def test_a_non_finite_loss_stops_training_before_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import ssdinfluence.train as trainer

    calls = []

    def value_loss_nan_from_the_fifth_minibatch(*args, **kwargs):  # 2 epochs x 2 minibatches per update
        terms = policy_loss_terms(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 5:
            terms.value_loss = terms.value_loss * float("nan")
        return terms

    monkeypatch.setattr(trainer, "policy_loss_terms", value_loss_nan_from_the_fifth_minibatch)
    config = tiny_config(tmp_path / "run", checkpoint_every=1, log_trajectories="")
    with pytest.raises(trainer.TrainingDiverged, match=r"update 2: the value loss is not finite"):
        train(config)
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 1
    saved = checkpoint.load(tmp_path / "run" / "checkpoint.pt")  # finite weights, or load would refuse it
    assert saved["update"] == 1


LEARN_MAP = "\n".join(["@@@@@@@@@", "@PAAAAAA@", "@AAAAAAA@", "@AAAAAAA@", "@AAAAAAA@", "@@@@@@@@@"])


def test_agents_learn_on_a_small_map(tmp_path):
    """Fails when learning is broken: random play fires (-1) an eighth of the time and eats
    little; a working learner stops firing and harvests the fast-regrowing apples."""
    config = build_config({
        "env": "harvest", "agents": 1, "num_envs": 8, "rollout_length": 64, "bptt_length": 16,
        "steps": 8 * 64 * 40, "seed": 0, "out": str(tmp_path / "learn"), "log_trajectories": "",
        "lr": 0.003, "lr_end": 0.001, "entropy_coef": 0.01, "ppo_epochs": 4, "ppo_minibatches": 4,
        "checkpoint_every": 1000,
        "env_kwargs": {"map": LEARN_MAP, "horizon": 64, "regrowth_probs": (0.02, 0.1, 0.1, 0.1)},
    })
    rows = []
    train(config, on_update=rows.append)
    returns = [r["collective_return"] for r in rows if r["episodes"] > 0]
    early, late = np.mean(returns[:3]), np.mean(returns[-3:])
    assert late > early + 6, (early, late)  # measured: +11 learning, -1 with lr ~ 0


@pytest.mark.parametrize("num_envs,double_buffer", [(8, False), (8, True), (128, False)])
def test_training_does_not_depend_on_thread_count(tmp_path, num_envs, double_buffer):
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        models = []
        for threads in (1, 2, 0):  # 0: on 2 cores, two torch threads in the update and in the rollout from 128 envs
            out = tmp_path / f"t{threads}"
            train(tiny_config(out, threads=threads, num_envs=num_envs, steps=3 * num_envs * 16, ppo_minibatches=2,
                              double_buffer=double_buffer))
            models.append(checkpoint.load(out)["model"])
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)
    for key, value in models[0].items():
        assert torch.equal(value, models[1][key]) and torch.equal(value, models[2][key]), key


@CUDA
@pytest.mark.parametrize("double_buffer", [False, True])
def test_cuda_training_and_resume(tmp_path, double_buffer):
    config = tiny_config(tmp_path / "gpu", device="cuda", double_buffer=double_buffer)
    first = train(config, max_updates=2)
    assert first.updates == 2
    second = train(config, resume=True)
    assert second.updates == 4 and math.isfinite(second.last_row["policy_loss"])
    saved = checkpoint.load(tmp_path / "gpu", map_location="cpu")
    assert all(value.device.type == "cpu" for value in saved["model"].values())
    cpu = train(tiny_config(tmp_path / "cpu", device="cpu"))
    assert cpu.updates == 4


def test_target_kl_stops_an_update_after_the_first_minibatch_past_it(tmp_path, monkeypatch):
    steps = []
    adam_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    train(tiny_config(tmp_path / "free"))
    assert len(steps) == 4 * 2 * 2  # 4 updates x 2 epochs x 2 minibatches
    steps.clear()
    # any policy change exceeds a target this small: each update takes its first step only
    train(tiny_config(tmp_path / "stopped", target_kl=1e-12))
    assert len(steps) == 4


@pytest.mark.parametrize("model", ["baseline", "influence", "moa", "comm"])
@pytest.mark.parametrize("double_buffer", [False, True])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_the_rollout_stores_what_the_policy_did(model, double_buffer, device):
    """Every stored step re-evaluates to the log-probabilities and values the policy acted
    with: the inputs, actions and LSTM states of each env line up, also when the batch is
    stepped in two halves (the halves' outputs are put together in env order)."""
    from types import SimpleNamespace

    from ssdinfluence.envs import make
    from ssdinfluence.policies import make_policies
    from ssdinfluence.train import Rollout, _act, _act_double_buffered

    T, B = 24, 6
    config = tiny_config("unused", model=model, agents=3, num_envs=B, rollout_length=T, bptt_length=T)
    torch.manual_seed(0)
    env = make("harvest", num_envs=B, num_agents=3, seed=1, horizon=10)  # episodes end inside the rollout
    device = torch.device(device)
    policy = make_policies(config, env.num_actions, device)
    run = SimpleNamespace(env=env, lstm_state=policy.initial_state(B, device), episode_start=np.ones(B, bool),
                          sampler=torch.Generator(device).manual_seed(2), recorder=None)
    rollout = Rollout(T, B, 3, env.observation_shape, run.lstm_state, T, device)
    obs, info = env.reset()
    acting = _act_double_buffered if double_buffer else _act
    timers = dict.fromkeys(("env", "forward"), 0.0)
    with torch.no_grad():
        for t, step, actions_np, rewards, truncated in acting(run, policy, rollout, obs, info, timers):
            np.testing.assert_array_equal(actions_np, step.actions.T.cpu().numpy())
            rollout.store_rewards(t, rewards, truncated)
            run.episode_start = truncated.copy()
        assert rollout.done.any() and rollout.episode_start[1:].any()
        zeros = torch.zeros_like(rollout.rewards)
        batch = {**rollout.batch(zeros, zeros), "message_advantages": zeros, "message_returns": zeros}
        logits, values, _ = policy.sequence(batch, tuple(buf[0] for buf in rollout.lstm_states))
    logprobs = torch.log_softmax(logits, -1).gather(-1, rollout.actions.transpose(1, 2).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs.transpose(1, 2), rollout.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values.transpose(1, 2), rollout.values, atol=1e-5, rtol=1e-5)
    assert timers["env"] > 0 and timers["forward"] > 0


@CUDA
@pytest.mark.parametrize("model", ["baseline", "influence", "moa", "comm"])
def test_acting_on_cuda_never_waits_for_the_device(model):
    """The rollout's only host sync is the one for the actions: ``policy.act`` itself queues
    its work and returns (CUDA's sync debug mode raises on any synchronising call)."""
    from ssdinfluence.policies import make_policies

    B, N, device = 8, 3, torch.device("cuda")
    policy = make_policies(tiny_config("unused", model=model, agents=N, num_envs=B), 8, device)
    obs = torch.randint(0, 255, (B, N, 15, 15, 3), dtype=torch.uint8, device=device)
    prev = torch.randint(0, 8, (B, N), device=device)
    visible, start = torch.ones(B, N, N, dtype=torch.bool, device=device), torch.zeros(B, dtype=torch.bool, device=device)
    state, sampler = policy.initial_state(B, device), torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        state = policy.act(obs, prev, visible, state, start, sampler).state  # first call: lazy initialisation
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step = policy.act(obs, prev, visible, state, start, sampler)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert step.actions.shape == (N, B)
