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


REGISTRY = pytest.mark.skipif(not hasattr(__import__("pettingzoo"), "register"),
                              reason="this PettingZoo has no registry (added in 1.27)")


@REGISTRY
@pytest.mark.parametrize("first", ["ssdinfluence", "pettingzoo"])
def test_registry_in_a_fresh_process_either_import_order(first):
    """``import ssdinfluence`` alone (no ``pettingzoo_env``) makes the ids known to pettingzoo.make,
    whichever package is imported first, without loading the kernels until an env is made."""
    import subprocess
    import sys

    second = "pettingzoo" if first == "ssdinfluence" else "ssdinfluence"
    code = (f"import sys, {first}, {second}\n"
            "assert 'ssdinfluence.envs' not in sys.modules\n"
            "env = pettingzoo.make('parallel', 'ssdinfluence/harvest-v0', num_agents=2, horizon=7)\n"
            "obs, infos = env.reset(seed=0)\n"
            "print(type(env).__name__, sorted(obs), env.max_cycles)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["HarvestParallelEnv", "['agent_0',", "'agent_1']", "7"]


@REGISTRY
def test_registry_make_passes_api_test_and_max_cycles():
    import pettingzoo

    import ssdinfluence  # noqa: F401  (registers the ids)

    env = pettingzoo.make("parallel", "ssdinfluence/cleanup-v0", num_agents=3, horizon=60)
    assert isinstance(env, CleanupParallelEnv) and env.max_cycles == 60
    parallel_api_test(env, num_cycles=70)
    # PettingZoo's own episode-length argument is the horizon
    assert pettingzoo.make("parallel", "ssdinfluence/harvest-v0", max_cycles=9, num_agents=2).max_cycles == 9
    with pytest.raises(ValueError, match="max_cycles .* and horizon .* differ"):
        pettingzoo.make("parallel", "ssdinfluence/harvest-v0", max_cycles=9, horizon=10)
    assert pettingzoo.spec("parallel", "ssdinfluence/harvest").id == "ssdinfluence/harvest-v0"  # latest version


def test_registering_without_a_registry_is_a_no_op(monkeypatch):
    """Older PettingZoo (< 1.27) has no ``register``: nothing is registered, make_parallel still works."""
    import types

    from ssdinfluence import registration

    monkeypatch.setitem(__import__("sys").modules, "pettingzoo", types.ModuleType("pettingzoo"))
    assert registration.register_pettingzoo_envs() is False
    assert isinstance(make_parallel("ssdinfluence/cleanup-v0", num_agents=2, horizon=5), CleanupParallelEnv)
