"""Eating and beams: geometry, stopping rules, fire costs and hits, cleaning, random order."""

from __future__ import annotations

import numpy as np
import pytest

from ssdinfluence.envs import tiles
from ssdinfluence.envs.tiles import CLEAN, DOWN, FIRE, LEFT, MOVE_UP, RIGHT, STAY, UP
from ssdinfluence.metrics import BeamTracker

from .helpers import act, make_env, place

BIG_OPEN = "\n".join(["@" * 15] + ["@P" + " " * 11 + "P@"] + ["@" + " " * 13 + "@"] * 11 + ["@P" + " " * 11 + "P@"] + ["@" * 15])


def expected_beam(row, col, orientation, length=5):
    """Cells of a beam in open space, written out from the spec's geometry."""
    fr, fc = tiles.FORWARD[orientation]
    rr, rc = fc, -fr
    cells = {(row + d * fr, col + d * fc) for d in range(1, length + 1)}
    for side in (-1, 1):
        cells |= {(row + side * rr + d * fr, col + side * rc + d * fc) for d in range(length)}
    return cells


def beam_cells(env, kind=tiles.BEAM_FIRE):
    return {tuple(c) for c in np.argwhere(env.get_state()["beams"][0] == kind)}


@pytest.mark.parametrize("orientation", [UP, RIGHT, DOWN, LEFT])
def test_beam_geometry_in_open_space(orientation):
    env = place(make_env(map=BIG_OPEN), [[7, 7]], [orientation])
    _, rewards, _ = act(env, FIRE)
    cells = beam_cells(env)
    assert cells == expected_beam(7, 7, orientation)
    assert len(cells) == 15
    assert rewards[0, 0] == -1.0  # the fire cost, nothing hit


def test_hand_written_beam_facing_up():
    env = place(make_env(map=BIG_OPEN), [[7, 7]], [UP])
    act(env, FIRE)
    centre = {(r, 7) for r in range(2, 7)}
    left = {(r, 6) for r in range(3, 8)}
    right = {(r, 8) for r in range(3, 8)}
    assert beam_cells(env) == centre | left | right


def test_beam_stops_before_walls():
    corridor = "@@@@@@@@@@\n@P   @   @\n@@@@@@@@@@"
    env = place(make_env(map=corridor), [[1, 1]], [RIGHT])
    act(env, FIRE)
    assert beam_cells(env) == {(1, 2), (1, 3), (1, 4)}  # side cells are walls, wall not covered


def test_ray_stops_at_first_agent_and_hits_it():
    env = place(make_env(map=BIG_OPEN, num_agents=3), [[7, 3], [7, 5], [7, 6]], [RIGHT, UP, UP])
    _, rewards, _ = act(env, FIRE, STAY, STAY)
    assert rewards[0].tolist() == [-1.0, -50.0, 0.0]
    centre = {c for c in beam_cells(env) if c[0] == 7}
    assert centre == {(7, 4), (7, 5)}  # the hit agent's cell is covered, nothing behind it


def test_side_ray_hits_agent_beside_shooter():
    env = place(make_env(map=BIG_OPEN, num_agents=2), [[7, 7], [7, 6]], [UP, UP])
    _, rewards, _ = act(env, FIRE, STAY)
    assert rewards[0].tolist() == [-1.0, -50.0]
    assert {c for c in beam_cells(env) if c[1] == 6} == {(7, 6)}


def test_two_shooters_stack_hits():
    env = place(make_env(map=BIG_OPEN, num_agents=3), [[7, 4], [7, 7], [7, 10]], [RIGHT, UP, LEFT])
    _, rewards, _ = act(env, FIRE, STAY, FIRE)
    assert rewards[0].tolist() == [-1.0, -100.0, -1.0]


def test_hit_agents_stay_on_the_map():
    env = place(make_env(map=BIG_OPEN, num_agents=2), [[7, 4], [7, 6]], [RIGHT, UP])
    act(env, FIRE, STAY)
    assert env.get_state()["positions"][0].tolist() == [[7, 4], [7, 6]]


def test_beams_pass_over_apples_river_and_stream():
    corridor = "@@@@@@@@@\n@PARS   @\n@@@@@@@@@"
    env = place(make_env(map=corridor), [[1, 1]], [RIGHT])
    grid_before = env.get_state()["grid"].copy()
    act(env, FIRE)
    assert beam_cells(env) == {(1, c) for c in range(2, 7)}
    assert np.array_equal(env.get_state()["grid"], grid_before)


def test_clean_converts_first_waste_and_stops():
    # four waste cells: after two cleans the density is still 0.5, so no waste respawns
    corridor = "@@@@@@@@@\n@P HHHH @\n@@@@@@@@@"
    env = place(make_env(map=corridor, num_agents=1), [[1, 1]], [RIGHT])
    assert env.waste_fraction().tolist() == [1.0]
    _, rewards, _ = act(env, CLEAN)
    grid = env.get_state()["grid"][0]
    assert grid[1, 3] == tiles.RIVER and grid[1, 4] == tiles.WASTE
    assert beam_cells(env, tiles.BEAM_CLEAN) == {(1, 2), (1, 3)}
    assert rewards[0, 0] == 0.0  # cleaning is free
    assert env.waste_fraction().tolist() == [0.75]
    act(env, CLEAN)
    assert env.get_state()["grid"][0, 1, 4] == tiles.RIVER
    assert env.waste_fraction().tolist() == [0.5]
    assert make_env("harvest", map=None).waste_fraction().shape == (0,)  # no river


def test_clean_stops_at_agents_without_harming_them():
    env = place(make_env(map=BIG_OPEN, num_agents=2), [[7, 4], [7, 6]], [RIGHT, UP])
    _, rewards, _ = act(env, CLEAN, STAY)
    assert rewards[0].tolist() == [0.0, 0.0]
    assert {c for c in beam_cells(env, tiles.BEAM_CLEAN) if c[0] == 7} == {(7, 5), (7, 6)}


# Two cleaners whose centre rays first reach the same waste W=(3,3): whoever fires first
# cleans W; the other's ray then passes over it and cleans the next waste on its own line.
# The walled-off waste row keeps the density above 0.4, so no waste respawns.
CROSSING = """\
@@@@@@@
@@@P@@@
@@@ @@@
@P HH @
@@@H@@@
@@@@@@@
@HHHHH@
@@@@@@@"""


def test_beam_order_is_uniformly_random():
    B = 4000
    env = place(make_env(map=CROSSING, num_agents=2, num_envs=B), [[3, 1], [1, 3]], [RIGHT, DOWN])
    act(env, CLEAN, CLEAN)
    grid = env.get_state()["grid"]
    assert np.all(grid[:, 3, 3] == tiles.RIVER)
    first_was_horizontal = grid[:, 4, 3] == tiles.RIVER  # the vertical ray went on to (4,3)
    assert np.all(first_was_horizontal != (grid[:, 3, 4] == tiles.RIVER))
    assert abs(first_was_horizontal.mean() - 0.5) < 4 * np.sqrt(0.25 / B)


def test_eating_an_apple():
    corridor = "@@@@@@\n@PAA @\n@@@@@@"
    env = place(make_env("harvest", map=corridor, regrowth_probs=(0, 0, 0, 0)), [[1, 1]], [RIGHT])
    _, rewards, _ = act(env, MOVE_UP)
    assert rewards[0, 0] == 1.0
    assert env.get_state()["grid"][0, 1, 2] == tiles.FLOOR
    _, rewards, _ = act(env, MOVE_UP)
    assert rewards[0, 0] == 1.0
    _, rewards, _ = act(env, MOVE_UP)
    assert rewards[0, 0] == 0.0
    assert env.get_state()["returns"][0, 0] == 2.0


def test_reward_parameters():
    env = place(make_env(map=BIG_OPEN, num_agents=2, fire_cost=0.5, hit_penalty=7.0),
                [[7, 4], [7, 6]], [RIGHT, UP])
    _, rewards, _ = act(env, FIRE, STAY)
    assert rewards[0].tolist() == [-0.5, -7.0]


def test_beam_length_parameter():
    env = place(make_env(map=BIG_OPEN, beam_length=3), [[7, 7]], [UP])
    act(env, FIRE)
    assert beam_cells(env) == expected_beam(7, 7, UP, length=3)


def test_beams_last_one_step():
    env = place(make_env(map=BIG_OPEN), [[7, 7]], [UP])
    act(env, FIRE)
    act(env, STAY)
    assert not env.get_state()["beams"].any()


def test_hits_count_shooter_and_target():
    # 0 fires right at 1 (two cells away); 2 fires left at 1 too; 3 fires up at nobody.
    env = place(make_env(map=BIG_OPEN, num_agents=4), [[7, 4], [7, 6], [7, 8], [11, 11]], [RIGHT, UP, LEFT, UP])
    _, _, info = act(env, FIRE, STAY, FIRE, FIRE)
    expected = np.zeros((4, 4), np.int32)
    expected[0, 1] = expected[2, 1] = 1
    assert info["hits"].dtype == np.int32
    np.testing.assert_array_equal(info["hits"][0], expected)
    _, _, info = act(env, STAY, STAY, FIRE, STAY)  # the next step starts from zero
    expected[0, 1] = 0
    np.testing.assert_array_equal(info["hits"][0], expected)
    assert not env.reset()[1]["hits"].any()


def test_beam_tracker_rates_from_a_hand_written_map():
    # Two envs, 3 agents: 0 fires at 1 every step; 2 fires at nobody on odd steps. Exact counts.
    env = place(make_env(map=BIG_OPEN, num_agents=3, num_envs=2), [[7, 4], [7, 6], [11, 11]], [RIGHT, UP, UP])
    tracker = BeamTracker(3, FIRE)
    for t in range(4):
        actions = np.array([[FIRE, STAY, FIRE if t % 2 else STAY]] * 2, np.int32)
        _, _, _, _, info = env.step(actions)
        tracker.update(actions, info["hits"])
    row = tracker.columns()
    assert [row[f"fire_rate_agent_{k}"] for k in range(3)] == [1.0, 0.0, 0.5]
    assert [row[f"hit_rate_agent_{k}"] for k in range(3)] == [0.0, 1.0, 0.0]
    assert row["hits_0_on_1"] == 1.0 and row["hits_1_on_0"] == 0.0 and row["hits_2_on_1"] == 0.0
    assert set(row) == set(BeamTracker.column_names(3))
    assert np.isnan(tracker.columns()["fire_rate_agent_0"])  # columns() reset the window


def test_beam_tracker_counts_cleaning_where_asked():
    tracker = BeamTracker(2, FIRE, CLEAN)
    hits = np.zeros((2, 2, 2), np.int32)
    tracker.update(np.array([[CLEAN, FIRE], [CLEAN, CLEAN]]), hits)
    tracker.update(np.array([[STAY, FIRE], [CLEAN, STAY]]), hits)
    row = tracker.columns()
    assert set(row) == set(BeamTracker.column_names(2, cleans=True))
    assert [row["clean_rate_agent_0"], row["clean_rate_agent_1"]] == [0.75, 0.25]
    assert [row["fire_rate_agent_0"], row["fire_rate_agent_1"]] == [0.0, 0.5]
    assert "clean_rate_agent_0" not in BeamTracker.column_names(2)
