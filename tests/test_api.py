"""The batched API: shapes, autoreset, state round trips, determinism, bad input."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import ssdinfluence
from ssdinfluence.envs import tiles

from .helpers import OPEN_MAP, act, make_env


def rollout(env, steps, seed=1):
    """Random actions for `steps` steps; returns copies of every output, stacked."""
    rng = np.random.default_rng(seed)
    out = {"obs": [], "rewards": [], "truncated": [], "prev_actions": [], "visible": []}
    for _ in range(steps):
        obs, rewards, _, truncated, info = env.step(rng.integers(0, env.num_actions, (env.num_envs, env.num_agents)))
        for key, value in (("obs", obs), ("rewards", rewards), ("truncated", truncated),
                           ("prev_actions", info["prev_actions"]), ("visible", info["visible"])):
            out[key].append(value.copy())
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["cleanup", "harvest"])
def test_shapes_and_dtypes(name):
    env = ssdinfluence.make(name, num_envs=3, num_agents=4, seed=0)
    obs, info = env.reset()
    assert env.num_envs == 3 and env.num_agents == 4 and env.horizon == 1000
    assert env.num_actions == {"cleanup": 9, "harvest": 8}[name]
    assert env.observation_shape == (15, 15, 3)
    assert obs.shape == (3, 4, 15, 15, 3) and obs.dtype == np.uint8
    assert info["prev_actions"].tolist() == [[tiles.STAY] * 4] * 3
    assert info["visible"].shape == (3, 4, 4) and info["visible"].dtype == np.bool_
    obs, rewards, terminated, truncated, info = env.step(np.zeros((3, 4), np.int64))
    assert rewards.shape == (3, 4) and rewards.dtype == np.float32
    assert terminated.shape == truncated.shape == (3,) and terminated.dtype == truncated.dtype == np.bool_
    assert info["prev_actions"].tolist() == [[0] * 4] * 3
    assert info["final_obs"].shape == obs.shape and info["episode_returns"].shape == (3, 4)


def test_reset_places_agents_on_distinct_spawn_points():
    env = ssdinfluence.make("harvest", num_envs=50, num_agents=20, seed=3)
    env.reset()
    positions = env.get_state()["positions"]
    spawns = {tuple(p) for p in env.layout.spawn_points}
    for b in range(50):
        cells = {tuple(p) for p in positions[b]}
        assert len(cells) == 20 and cells == spawns
    orientations = env.get_state()["orientations"]
    assert set(np.unique(orientations)) == {0, 1, 2, 3}


def test_autoreset_at_the_horizon():
    horizon = 7
    env = make_env("harvest", map=None, num_agents=3, num_envs=2, horizon=horizon)
    rng = np.random.default_rng(0)
    total = np.zeros((2, 3), np.float32)
    for t in range(1, horizon + 1):
        before = env.get_state()
        actions = rng.integers(0, env.num_actions, (2, 3))
        obs, rewards, terminated, truncated, info = env.step(actions)
        total += rewards
        assert not terminated.any()
        if t < horizon:
            assert not truncated.any()
    assert truncated.all()
    np.testing.assert_array_equal(info["episode_returns"], total)
    after = env.get_state()
    assert np.all(after["step_count"] == 0)
    assert np.all(after["prev_actions"] == tiles.STAY) and np.all(after["returns"] == 0)
    assert (after["grid"] == tiles.APPLE).sum() == 2 * 155  # a fresh map
    # final_obs is the last view of the finished episode: replay the last step to check it
    replay = make_env("harvest", map=None, num_agents=3, num_envs=2, horizon=horizon + 5)
    replay.set_state(before)
    replay_obs, _, _, _, _ = replay.step(actions)
    np.testing.assert_array_equal(info["final_obs"], replay_obs)
    assert not np.array_equal(obs, replay_obs)
    # and obs is the new episode's first view
    fresh = ssdinfluence.make("harvest", num_envs=2, num_agents=3, horizon=horizon)
    fresh.set_state(after)
    np.testing.assert_array_equal(fresh.observe()[0], obs)


def test_set_state_replays_exactly():
    env = ssdinfluence.make("cleanup", num_envs=4, num_agents=5, seed=11, horizon=50)
    env.reset()
    rollout(env, 20)
    state = env.get_state()
    first = rollout(env, 60, seed=5)  # crosses an autoreset
    env.set_state(state)
    second = rollout(env, 60, seed=5)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    other = ssdinfluence.make("cleanup", num_envs=4, num_agents=5, seed=999, horizon=50)
    other.set_state(state)
    third = rollout(other, 60, seed=5)
    for key in first:
        np.testing.assert_array_equal(first[key], third[key])


def test_same_seed_same_trajectories_and_reset_seed():
    a = ssdinfluence.make("harvest", num_envs=3, num_agents=5, seed=4)
    b = ssdinfluence.make("harvest", num_envs=3, num_agents=5, seed=4)
    a.reset()
    b.reset()
    ra, rb = rollout(a, 30), rollout(b, 30)
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key])
    c = ssdinfluence.make("harvest", num_envs=3, num_agents=5, seed=5)
    c.reset()
    assert not np.array_equal(rollout(c, 30)["obs"], ra["obs"])
    c.reset(seed=4)
    np.testing.assert_array_equal(rollout(c, 30)["obs"], ra["obs"])


def test_env_b_does_not_depend_on_batch_size():
    small = ssdinfluence.make("cleanup", num_envs=2, num_agents=5, seed=8)
    large = ssdinfluence.make("cleanup", num_envs=16, num_agents=5, seed=8)
    small.reset()
    large.reset()
    np.testing.assert_array_equal(small.get_state()["positions"], large.get_state()["positions"][:2])


@pytest.mark.parametrize("name", ["cleanup", "harvest"])
def test_determinism_with_one_and_two_threads(name):
    results = []
    max_threads = numba.config.NUMBA_NUM_THREADS
    for threads in (1, min(2, max_threads)):
        numba.set_num_threads(threads)
        env = ssdinfluence.make(name, num_envs=16, num_agents=5, seed=2, horizon=40)
        env.reset()
        results.append(rollout(env, 100))
    numba.set_num_threads(max_threads)
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


@pytest.mark.parametrize("name", ["cleanup", "harvest"])
def test_stepping_the_batch_in_parts_equals_stepping_it_whole(name):
    whole = ssdinfluence.make(name, num_envs=5, num_agents=5, seed=6, horizon=25)
    parts = ssdinfluence.make(name, num_envs=5, num_agents=5, seed=6, horizon=25)
    whole.reset()
    parts.reset()
    rng = np.random.default_rng(0)
    for _ in range(60):  # past two autoresets
        actions = rng.integers(0, whole.num_actions, (5, 5))
        expected = [np.copy(x) for x in whole.step(actions)[:4]]
        parts.step(actions[:2], envs=slice(0, 2))
        got = parts.step(actions[2:], envs=slice(2, 5))
        for a, b in zip(expected, got[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        for key in ("prev_actions", "visible", "hits", "final_obs", "episode_returns"):
            np.testing.assert_array_equal(whole._info()[key], got[4][key], err_msg=key)
    for key, value in whole.get_state().items():
        np.testing.assert_array_equal(value, parts.get_state()[key], err_msg=key)


def test_stepping_one_part_leaves_the_other_envs_alone():
    env = make_env(num_agents=2, num_envs=4)
    before = {k: np.copy(v) for k, v in env.get_state().items()}
    obs_before = np.copy(env.observe()[0])
    env.step(np.full((2, 2), tiles.MOVE_UP), envs=slice(1, 3))
    after = env.get_state()
    for key in after:
        np.testing.assert_array_equal(after[key][[0, 3]], before[key][[0, 3]], err_msg=key)
    assert not np.array_equal(after["step_count"][1:3], before["step_count"][1:3])
    np.testing.assert_array_equal(env._obs[[0, 3]], obs_before[[0, 3]])


# ----------------------------------------------------------------------- bad input
def test_bad_parts_raise_and_leave_env_usable():
    env = make_env(num_agents=2, num_envs=4)
    before = env.get_state()
    with pytest.raises(ValueError, match=r"shape \(4, 2\), expected \(2, 2\) \(envs 0:2, num_agents\)"):
        env.step(np.zeros((4, 2), np.int32), envs=slice(0, 2))
    with pytest.raises(ValueError, match="selects no env of 4"):
        env.step(np.zeros((0, 2), np.int32), envs=slice(3, 3))
    with pytest.raises(ValueError, match="slice start:stop of consecutive envs"):
        env.step(np.zeros((2, 2), np.int32), envs=slice(0, 4, 2))
    with pytest.raises(ValueError, match="slice start:stop of consecutive envs"):
        env.step(np.zeros((2, 2), np.int32), envs=[0, 1])
    for key, value in env.get_state().items():
        np.testing.assert_array_equal(value, before[key])
    env.step(np.zeros((2, 2), np.int32), envs=slice(2, None))  # still usable; open-ended slices work


def test_bad_actions_raise_and_leave_env_usable():
    env = make_env(num_agents=2, num_envs=3)
    before = env.get_state()
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(3, 2\)"):
        env.step(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="must be integers"):
        env.step(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="action 9 out of range"):
        env.step(np.full((3, 2), 9))
    with pytest.raises(ValueError, match="action -1 out of range"):
        env.step(np.full((3, 2), -1))
    harvest = make_env("harvest")
    with pytest.raises(ValueError, match="harvest has 8 actions"):
        act(harvest, tiles.CLEAN)
    for key, value in env.get_state().items():
        np.testing.assert_array_equal(value, before[key])
    act(env, tiles.STAY, tiles.STAY)  # still usable


def test_step_before_reset():
    env = ssdinfluence.make("cleanup")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((1, 5), np.int32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "harvset"}, "unknown env 'harvset'; available: cleanup, harvest"),
    ({"num_agents": 11}, "too many agents for the map: 11 agents but only 10 spawn points"),
    ({"num_agents": 0}, "num_agents must be a positive integer"),
    ({"num_envs": 2.5}, "num_envs must be a positive integer"),
    ({"map": "@@@\n@P\n@@@"}, "ragged: row 0 has 3 characters, row 1 has 2"),
    ({"map": "@@@\n@X@\n@@@"}, r"unknown characters \['X'\]"),
    ({"map": "@@@\n@ @\n@@@"}, r"no spawn point \('P'\)"),
    ({"map": ""}, "map is empty"),
    ({"regrowth_probs": (0, 1)}, "do not apply to cleanup"),
    ({"horizon": 0}, "horizon must be in 1..2147483647"),
    ({"horizon": 10**20}, "horizon must be in 1..2147483647"),
    ({"bogus": 1}, r"unknown env parameter\(s\) \['bogus'\]"),
    ({"compat": "rllib"}, "unknown compat 'rllib'"),
    ({"waste_spawn_mode": "all"}, "unknown waste_spawn_mode 'all'"),
    ({"depletion_threshold": 0.0}, "restoration_threshold .* must be below"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_construction_arguments(kwargs, message):
    kwargs = {"name": "cleanup", **kwargs}
    with pytest.raises(ValueError, match=message):
        ssdinfluence.make(kwargs.pop("name"), **kwargs)


def test_bad_harvest_parameters():
    with pytest.raises(ValueError, match="regrowth_probs must be 4 probabilities"):
        ssdinfluence.make("harvest", regrowth_probs=(0, 0.1, 2.0, 0))
    with pytest.raises(ValueError, match="unknown regrowth_neighbourhood"):
        ssdinfluence.make("harvest", regrowth_neighbourhood="5x5")


def test_bad_set_state_raises_and_changes_nothing():
    env = make_env(num_agents=2, num_envs=2)
    good = env.get_state()

    def broken(**changes):
        state = env.get_state()
        for key, fn in changes.items():
            state[key] = fn(state[key])
        return state

    cases = [
        ("not a dict", "must be a dict"),
        (broken(grid=lambda g: g[:1]), r"state\['grid'\] has shape \(1, 9, 9\), expected \(2, 9, 9\)"),
        (broken(positions=lambda p: p.astype(np.int64)), r"state\['positions'\] has dtype int64, expected int32"),
        ({k: v for k, v in good.items() if k != "rng"}, r"missing \['rng'\]"),
        (broken(positions=lambda p: np.full_like(p, 3)), "two agents on one cell"),
        (broken(positions=lambda p: np.array([[[0, 0], [0, 1]]] * 2, np.int32)), "agent on a wall"),
        (broken(positions=lambda p: p + 20), "outside the 9x9 map"),
        (broken(orientations=lambda o: o + 4), "orientations"),
        (broken(grid=lambda g: np.where(g == tiles.WALL, tiles.FLOOR, g)), "walls differ"),
        (broken(grid=lambda g: g + 10), "codes above"),
        (broken(step_count=lambda s: s + 5000), "step_count"),
        (broken(prev_actions=lambda a: a + 20), "prev_actions"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=message):
            env.set_state(state)
        for key, value in env.get_state().items():
            np.testing.assert_array_equal(value, good[key])
    act(env, tiles.STAY, tiles.STAY)


def test_warmup_leaves_state_untouched():
    env = make_env(map=OPEN_MAP, num_agents=2, num_envs=2)
    before = env.get_state()
    env.warmup()
    for key, value in env.get_state().items():
        np.testing.assert_array_equal(value, before[key])


def test_observe_recomputes_views_after_set_state():
    env = ssdinfluence.make("harvest", num_envs=3, num_agents=4, seed=1)
    env.reset()
    rollout(env, 5)
    obs, _, _, _, info = env.step(np.zeros((3, 4), np.int32))
    expected_obs, expected_visible = obs.copy(), info["visible"].copy()
    after = env.get_state()
    other = ssdinfluence.make("harvest", num_envs=3, num_agents=4, seed=9)
    other.reset()
    other.set_state(after)
    obs, info = other.observe()
    np.testing.assert_array_equal(obs, expected_obs)
    np.testing.assert_array_equal(info["visible"], expected_visible)
    subset = env.map_state([0, 2])
    np.testing.assert_array_equal(subset["grid"], after["grid"][[0, 2]])
    assert subset["positions"].shape == (2, 4, 2)
