"""The PettingZoo front ends pass PettingZoo's own API and seed tests."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from ssdinfluence.pettingzoo_env import (  # noqa: E402
    ENV_IDS,
    CleanupParallelEnv,
    HarvestParallelEnv,
    make_parallel,
)


@pytest.mark.parametrize("cls", [CleanupParallelEnv, HarvestParallelEnv])
def test_parallel_api(cls):
    parallel_api_test(cls(num_agents=5, horizon=200), num_cycles=250)


@pytest.mark.parametrize("cls", [CleanupParallelEnv, HarvestParallelEnv])
def test_parallel_seed(cls):
    parallel_seed_test(lambda: cls(num_agents=3, horizon=100), num_cycles=120)


def test_episode_and_render():
    env = make_parallel("ssdinfluence/harvest-v0", num_agents=2, render_mode="rgb_array", horizon=5)
    assert sorted(ENV_IDS) == ["ssdinfluence/cleanup-v0", "ssdinfluence/harvest-v0"]
    observations, infos = env.reset(seed=3)
    assert set(observations) == {"agent_0", "agent_1"}
    assert observations["agent_0"].shape == (15, 15, 3) and observations["agent_0"].dtype == np.uint8
    assert infos["agent_1"]["visible"].shape == (2,)
    steps = 0
    while env.agents:
        observations, rewards, terminations, truncations, infos = env.step({a: 4 for a in env.agents})
        steps += 1
    assert steps == 5 and all(truncations.values()) and not any(terminations.values())
    frame = env.render()
    assert frame.shape == (16 * 8, 38 * 8, 3)
    assert env.state().shape == (16, 38, 3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset()
    with pytest.raises(ValueError, match="unknown or finished agents"):
        env.step({"agent_7": 0})
    with pytest.raises(ValueError, match="unknown env id"):
        make_parallel("ssdinfluence/cleanup-v9")
