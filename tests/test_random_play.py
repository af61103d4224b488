"""The figures the reference shows under uniformly random actions (5 agents), as sanity checks."""

from __future__ import annotations

import numpy as np
import pytest

import ssdinfluence
from ssdinfluence.envs import tiles


def random_play(name, num_envs=32, steps=999, seed=0):
    env = ssdinfluence.make(name, num_envs=num_envs, num_agents=5, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    tile = tiles.WASTE if name == "cleanup" else tiles.APPLE
    counts, rewards = [(env.get_state()["grid"] == tile).sum(axis=(1, 2))], []
    for _ in range(steps):
        _, r, _, _, _ = env.step(rng.integers(0, env.num_actions, (num_envs, 5)))
        counts.append((env.get_state()["grid"] == tile).sum(axis=(1, 2)))
        rewards.append(r.copy())
    return np.array(counts), np.concatenate(rewards).ravel()  # [T+1, B], [T * B * N]


def shares(rewards):
    return {
        "0": np.mean(rewards == 0),
        "-1": np.mean(rewards == -1),
        "hit": np.mean((rewards == -50) | (rewards == -51)),
        "+1": np.mean(rewards == 1),
    }


def test_cleanup_waste_settles_at_48():
    waste, rewards = random_play("cleanup")
    assert np.all(waste[0] == 56)
    late = waste[500:]
    assert 46.5 <= late.mean() <= 48.5
    assert np.bincount(late.ravel()).argmax() == 48
    # at or above 48/119 >= 0.4 nothing spawns, so waste can only fall from there
    grew = waste[1:] > waste[:-1]
    assert not np.any(grew & (waste[:-1] >= 48))
    s = shares(rewards)
    assert s["0"] == pytest.approx(0.87, abs=0.02)
    assert s["-1"] == pytest.approx(0.11, abs=0.015)
    assert s["hit"] == pytest.approx(0.015, abs=0.005)
    assert 0.001 < s["+1"] < 0.008


def test_harvest_keeps_about_113_to_128_apples():
    apples, rewards = random_play("harvest")
    assert np.all(apples[0] == 155)
    assert 113 <= apples[200:].mean() <= 128
    s = shares(rewards)
    assert s["0"] == pytest.approx(0.79, abs=0.025)
    assert s["-1"] == pytest.approx(0.13, abs=0.015)
    assert s["+1"] == pytest.approx(0.07, abs=0.015)
    assert s["hit"] == pytest.approx(0.012, abs=0.005)
