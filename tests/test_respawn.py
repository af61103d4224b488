"""Harvest regrowth and Cleanup's waste-dependent apples and waste, checked statistically."""

from __future__ import annotations

import numpy as np
import pytest

from ssdinfluence.envs import cleanup, tiles

from .helpers import act, make_env, place


def binomial_close(count, trials, p, sigmas=4.5):
    return abs(count - trials * p) <= sigmas * np.sqrt(trials * p * (1 - p)) + 1e-9


# The centre cell (3,3) is an A cell; the ring around it holds `k` apples (A cells)
# and floor elsewhere. The agent stands far away in the corner.
def harvest_ring_map(k, far_apple=False):
    ring = [(2, 2), (2, 3), (2, 4), (3, 2), (3, 4), (4, 2), (4, 3), (4, 4)]
    rows = [list("@@@@@@@@"), list("@      @"), list("@      @"), list("@      @"),
            list("@      @"), list("@      @"), list("@     P@"), list("@@@@@@@@")]
    rows[3][3] = "A"
    for r, c in ring[:k]:
        rows[r][c] = "A"
    if far_apple:
        rows[3][5] = "A"  # distance 2 from the centre: outside the 3x3 block
    return "\n".join("".join(r) for r in rows)


def empty_centre_and_step(env, steps=1):
    state = env.get_state()
    state["grid"][:, 3, 3] = tiles.FLOOR
    env.set_state(state)
    for _ in range(steps):
        act(env, tiles.STAY)
    return env.get_state()["grid"][:, 3, 3] == tiles.APPLE


@pytest.mark.parametrize(("k", "p"), [(1, 0.005), (2, 0.02), (3, 0.05), (5, 0.05)])
def test_harvest_regrowth_probability(k, p):
    B = 20000
    env = make_env("harvest", map=harvest_ring_map(k), num_envs=B)
    grown = empty_centre_and_step(env)
    assert binomial_close(grown.sum(), B, p)


def test_lonely_apple_never_regrows():
    env = make_env("harvest", map=harvest_ring_map(0), num_envs=2000)
    assert not empty_centre_and_step(env, steps=20).any()


def test_regrowth_neighbourhood_parameter():
    B = 20000
    env = make_env("harvest", map=harvest_ring_map(0, far_apple=True), num_envs=B)
    assert not empty_centre_and_step(env, steps=5).any()  # 3x3: the apple at distance 2 is not a neighbour
    env = make_env("harvest", map=harvest_ring_map(0, far_apple=True), num_envs=B, regrowth_neighbourhood="radius2")
    assert binomial_close(empty_centre_and_step(env).sum(), B, 0.005)


def test_regrowth_counts_the_map_before_this_steps_growth():
    # A row of A cells: only (1,1) starts with an apple. With p(>=1 neighbour) = 1 the apple's
    # neighbour grows, but the cell two away must wait a step (its neighbour grew this step).
    corridor = "@@@@@@@@\n@AAAA P@\n@@@@@@@@"
    env = make_env("harvest", map=corridor, regrowth_probs=(0, 1, 1, 1))
    state = env.get_state()
    state["grid"][0, 1, 2:5] = tiles.FLOOR
    env.set_state(state)
    act(env, tiles.STAY)
    assert (env.get_state()["grid"][0, 1, 1:5] == tiles.APPLE).tolist() == [True, True, False, False]
    act(env, tiles.STAY)
    assert (env.get_state()["grid"][0, 1, 1:5] == tiles.APPLE).tolist() == [True, True, True, False]


def test_no_apple_grows_under_an_agent():
    corridor = "@@@@@@\n@AAP @\n@@@@@@"
    env = make_env("harvest", map=corridor, regrowth_probs=(1, 1, 1, 1), num_envs=50)
    place(env, [[1, 2]], [tiles.UP])  # stands on the apple and eats it next step
    state = env.get_state()
    state["grid"][:, 1, 2] = tiles.FLOOR
    env.set_state(state)
    for _ in range(5):
        _, rewards, _ = act(env, tiles.STAY)
        assert np.all(env.get_state()["grid"][:, 1, 2] == tiles.FLOOR)
        assert np.all(rewards == 0)


# Cleanup: 10 waste-able cells (H/R) on row 1, 10 orchard cells on row 3, agent far away.
def cleanup_map(waste):
    river = "H" * waste + "R" * (10 - waste)
    return "\n".join(["@" * 12, "@" + river + "@", "@" + " " * 10 + "@", "@" + "B" * 10 + "@",
                      "@" + " " * 9 + "P@", "@" * 12])


@pytest.mark.parametrize("waste", [0, 1, 2, 3])
def test_cleanup_apple_probability_follows_waste_density(waste):
    B = 3000
    env = make_env("cleanup", map=cleanup_map(waste), num_envs=B)
    state = env.get_state()
    state["grid"][:, 3, 1:11] = tiles.FLOOR  # undo the reset pass's apples
    state["grid"][:, 1, 1 + waste:11] = tiles.RIVER
    env.set_state(state)
    act(env, tiles.STAY)
    apples = (env.get_state()["grid"][:, 3, 1:11] == tiles.APPLE).sum()
    density = waste / 10
    expected_p = 0.05 * (1 - density / 0.4)
    assert binomial_close(apples, B * 10, expected_p)


@pytest.mark.parametrize("waste", [4, 5, 10])
def test_nothing_spawns_at_or_above_depletion(waste):
    env = make_env("cleanup", map=cleanup_map(waste), num_envs=500)
    grid_before = env.get_state()["grid"].copy()
    for _ in range(5):
        act(env, tiles.STAY)
    assert np.array_equal(env.get_state()["grid"], grid_before)


def test_apple_probability_formula():
    params = cleanup.game_params()
    assert cleanup.apple_probability(0.0, params) == pytest.approx(0.05)
    assert cleanup.apple_probability(0.2, params) == pytest.approx(0.025)
    assert cleanup.apple_probability(0.4, params) == 0.0
    params = cleanup.game_params(restoration_threshold=0.1)
    assert cleanup.apple_probability(0.05, params) == pytest.approx(0.05)
    assert cleanup.apple_probability(0.25, params) == pytest.approx(0.025)


def clean_river(env):
    """Undo the reset pass's waste (it already spawned one cell)."""
    state = env.get_state()
    state["grid"][:, 1, 1:11] = tiles.RIVER
    env.set_state(state)


def test_one_waste_cell_appears_per_step_by_default():
    B = 2000
    env = make_env("cleanup", map=cleanup_map(0), num_envs=B)
    clean_river(env)
    act(env, tiles.STAY)
    waste = (env.get_state()["grid"][:, 1, 1:11] == tiles.WASTE).sum(axis=1)
    # 10 clean cells: some coin flip succeeds with probability 1 - 0.5**10
    assert binomial_close((waste == 1).sum(), B, 1 - 0.5**10)
    assert waste.max() == 1
    where = np.argmax(env.get_state()["grid"][:, 1, 1:11] == tiles.WASTE, axis=1)[waste == 1]
    counts = np.bincount(where, minlength=10)
    expected = len(where) / 10
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))  # uniform over the clean cells


def test_single_waste_mode_spawns_half_the_time():
    B = 4000
    env = make_env("cleanup", map=cleanup_map(0), num_envs=B, waste_spawn_mode="single")
    clean_river(env)
    act(env, tiles.STAY)
    waste = (env.get_state()["grid"][:, 1, 1:11] == tiles.WASTE).sum(axis=1)
    assert binomial_close((waste == 1).sum(), B, 0.5)


def test_waste_may_appear_under_an_agent():
    one_cell = "@@@@\n@R @\n@ P@\n@@@@"
    env = make_env("cleanup", map=one_cell, num_envs=200)
    place(env, [[1, 1]], [tiles.UP])
    act(env, tiles.STAY)
    assert (env.get_state()["grid"][:, 1, 1] == tiles.WASTE).mean() > 0.3
    assert np.all(env.get_state()["positions"][:, 0] == [1, 1])


def test_reset_state_of_default_maps():
    harvest = make_env("harvest", map=None, num_agents=5)
    assert (harvest.get_state()["grid"] == tiles.APPLE).sum() == 155
    clean = make_env("cleanup", map=None, num_agents=5)
    grid = clean.get_state()["grid"][0]
    assert (grid == tiles.WASTE).sum() == 56 and (grid == tiles.APPLE).sum() == 0
    assert (grid == tiles.RIVER).sum() == 63 and (grid == tiles.STREAM).sum() == 12
    assert len(clean.layout.waste_cells) == 119 and len(clean.layout.apple_cells) == 103
