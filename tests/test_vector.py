"""The flat vector view (ssdinfluence.make_vec) against the batched env and gymnasium's own tools."""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from gymnasium.utils.passive_env_checker import check_obs  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402
from gymnasium.wrappers.vector import RecordEpisodeStatistics  # noqa: E402

import ssdinfluence  # noqa: E402
from ssdinfluence.vector import AgentVectorEnv  # noqa: E402


def test_spaces_and_metadata():
    envs = ssdinfluence.make_vec("cleanup", num_envs=3, num_agents=4, seed=0)
    assert isinstance(envs, gym.vector.VectorEnv) and isinstance(envs, AgentVectorEnv)
    assert envs.num_envs == 12 and envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (15, 15, 3), np.uint8)
    assert envs.single_action_space == gym.spaces.Discrete(9)
    assert envs.observation_space.shape == (12, 15, 15, 3) and envs.observation_space.dtype == np.uint8
    assert envs.action_space == gym.spaces.MultiDiscrete([9] * 12)
    assert ssdinfluence.make_vec("harvest", num_envs=1, num_agents=2).single_action_space.n == 8


def test_matches_the_batched_env_step_for_step_including_autoreset():
    """Same seed and actions: every entry b * N + k is agent k of env b, through two episode ends."""
    B, N, T = 3, 4, 12
    envs = ssdinfluence.make_vec("harvest", num_envs=B, num_agents=N, seed=5, horizon=5)
    raw = ssdinfluence.make("harvest", num_envs=B, num_agents=N, seed=5, horizon=5)
    actions = np.random.default_rng(0).integers(0, 8, (T, B * N))
    obs, info = envs.reset(seed=7)
    raw_obs, _ = raw.reset(seed=7)
    assert info == {} and np.array_equal(obs, raw_obs.reshape(B * N, 15, 15, 3))
    ends = 0
    for t in range(T):
        obs, rewards, terminations, truncations, info = envs.step(actions[t])
        raw_obs, raw_rewards, raw_term, raw_trunc, raw_info = raw.step(actions[t].reshape(B, N))
        assert np.array_equal(obs, raw_obs.reshape(B * N, 15, 15, 3))
        assert rewards.dtype == np.float32 and np.array_equal(rewards, raw_rewards.reshape(-1))
        assert np.array_equal(truncations, np.repeat(raw_trunc, N)) and not terminations.any()
        if raw_trunc.any():
            ends += 1
            assert np.array_equal(info["_final_obs"], truncations) and np.array_equal(info["_final_info"], truncations)
            for i in range(B * N):
                b, k = divmod(i, N)
                if truncations[i]:
                    assert np.array_equal(info["final_obs"][i], raw_info["final_obs"][b, k])
                    assert info["final_info"]["episode_return"][i] == raw_info["episode_returns"][b, k]
                else:
                    assert info["final_obs"][i] is None
        else:
            assert info == {}
    assert ends == 2  # steps 5 and 10


def test_zero_copy_views_of_the_kernel_buffers():
    envs = ssdinfluence.make_vec("cleanup", num_envs=2, num_agents=3, seed=0, horizon=2)
    kernel_obs, _ = envs.env.reset()  # the batched env hands out its own buffers
    kernel_step = envs.env.step(np.zeros((2, 3), np.int64))
    obs, _ = envs.reset()
    assert np.shares_memory(obs, kernel_obs)
    step_obs, rewards, _, _, _ = envs.step(np.zeros(6, np.int64))
    assert np.shares_memory(step_obs, kernel_step[0]) and np.shares_memory(rewards, kernel_step[1])
    _, _, _, truncations, info = envs.step(np.zeros(6, np.int64))  # the horizon: every episode ends
    assert truncations.all()
    assert all(np.shares_memory(view, kernel_step[4]["final_obs"]) for view in info["final_obs"])


def test_gymnasium_checks_and_episode_statistics_wrapper():
    """gymnasium's observation checks on every step, its data_equivalence for determinism, and its
    SAME_STEP-aware RecordEpisodeStatistics agreeing with the env's own episode returns."""
    B, N, H = 2, 3, 20
    runs = []
    for _ in range(2):
        envs = RecordEpisodeStatistics(ssdinfluence.make_vec("cleanup", num_envs=B, num_agents=N, seed=1, horizon=H))
        obs, _ = envs.reset(seed=3)
        envs.action_space.seed(3)
        trajectory, summed = [obs.copy()], np.zeros(B * N)
        for _ in range(2 * H):
            obs, rewards, terminations, truncations, info = envs.step(envs.action_space.sample())
            assert envs.observation_space.contains(obs)
            check_obs(obs[0], envs.single_observation_space, "step")
            summed += rewards
            trajectory.append((obs.copy(), rewards.copy(), truncations.copy()))
            if truncations.any():
                assert np.allclose(info["episode"]["r"], summed, atol=1e-3)
                assert np.array_equal(info["episode"]["l"], np.full(B * N, H))
                assert np.allclose(info["final_info"]["episode_return"], summed, atol=1e-3)
                summed[:] = 0
        assert envs.episode_count == 2 * B * N
        runs.append(trajectory)
    assert data_equivalence(runs[0], runs[1], exact=True)


def test_bad_input_raises_value_error_and_leaves_it_usable():
    envs = ssdinfluence.make_vec("harvest", num_envs=2, num_agents=2)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        envs.step(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError):
        envs.step(np.array([0, 1, 2, 99]))
    with pytest.raises(ValueError, match="one integer"):
        envs.reset(seed=[1, 2, 3, 4])
    obs, *_ = envs.step(np.zeros(4, np.int64))
    assert obs.shape == (4, 15, 15, 3)
    with pytest.raises(ValueError, match="unknown env"):
        ssdinfluence.make_vec("snake")


def test_outside_trainer_example_runs_on_the_view():
    """examples/train_vec_ppo.py (a CleanRL-style PPO on make_vec) trains through episode ends."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("torch")
    path = Path(__file__).parent.parent / "examples" / "train_vec_ppo.py"
    spec = importlib.util.spec_from_file_location("train_vec_ppo", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    lines = []
    history = example.train("harvest", num_envs=2, agents=3, steps=2 * 2 * 32, rollout=32, horizon=20, log=lines.append)
    assert len(history) == len(lines) == 2
    assert all(np.isfinite([row["policy_loss"], row["value_loss"], row["entropy"]]).all() for row in history)
    assert np.isfinite(history[0]["episode_return"])  # an episode of 20 steps ended in the first 32


def test_without_gymnasium_the_error_names_the_pip_install():
    import subprocess
    import sys

    code = ("import sys\nsys.modules['gymnasium'] = None  # what importing it sees when it is not installed\n"
            "import ssdinfluence\ntry:\n    ssdinfluence.make_vec('cleanup')\nexcept ImportError as error:\n"
            "    print(error)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "ssdinfluence[gymnasium]"' in out
