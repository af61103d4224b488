"""Turns and moves: egocentric directions, walls, contests, swaps, cycles, no double occupancy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdinfluence.envs import tiles
from ssdinfluence.envs.tiles import (
    DOWN,
    LEFT,
    MOVE_DOWN,
    MOVE_LEFT,
    MOVE_RIGHT,
    MOVE_UP,
    RIGHT,
    STAY,
    TURN_CLOCKWISE,
    TURN_COUNTERCLOCKWISE,
    UP,
)

from .helpers import act, make_env, place

# (orientation, action) -> displacement, written out from the spec's definitions.
EGOCENTRIC = {
    (UP, MOVE_UP): (-1, 0), (UP, MOVE_DOWN): (1, 0), (UP, MOVE_LEFT): (0, -1), (UP, MOVE_RIGHT): (0, 1),
    (RIGHT, MOVE_UP): (0, 1), (RIGHT, MOVE_DOWN): (0, -1), (RIGHT, MOVE_LEFT): (-1, 0), (RIGHT, MOVE_RIGHT): (1, 0),
    (DOWN, MOVE_UP): (1, 0), (DOWN, MOVE_DOWN): (-1, 0), (DOWN, MOVE_LEFT): (0, 1), (DOWN, MOVE_RIGHT): (0, -1),
    (LEFT, MOVE_UP): (0, -1), (LEFT, MOVE_DOWN): (0, 1), (LEFT, MOVE_LEFT): (1, 0), (LEFT, MOVE_RIGHT): (-1, 0),
}


@pytest.mark.parametrize(("orientation", "action"), sorted(EGOCENTRIC))
def test_egocentric_moves(orientation, action):
    env = place(make_env(), [[4, 4]], [orientation])
    act(env, action)
    state = env.get_state()
    assert tuple(state["positions"][0, 0] - [4, 4]) == EGOCENTRIC[orientation, action]
    assert state["orientations"][0, 0] == orientation  # moving never turns


def test_facing_left_move_left_goes_down():
    env = place(make_env(), [[4, 4]], [LEFT])
    act(env, MOVE_LEFT)
    assert env.get_state()["positions"][0, 0].tolist() == [5, 4]


def test_turns_take_the_whole_step():
    env = place(make_env(), [[4, 4]], [UP])
    seen = []
    for _ in range(4):
        act(env, TURN_CLOCKWISE)
        seen.append(int(env.get_state()["orientations"][0, 0]))
    assert seen == [RIGHT, DOWN, LEFT, UP]
    for _ in range(4):
        act(env, TURN_COUNTERCLOCKWISE)
        seen.append(int(env.get_state()["orientations"][0, 0]))
    assert seen[4:] == [LEFT, DOWN, RIGHT, UP]
    assert env.get_state()["positions"][0, 0].tolist() == [4, 4]


def test_walls_and_map_edge_block_moves():
    env = place(make_env(), [[1, 1]], [UP])
    act(env, MOVE_UP)
    act(env, MOVE_LEFT)
    assert env.get_state()["positions"][0, 0].tolist() == [1, 1]
    # a map not enclosed by walls: the edge blocks like a wall
    env = place(make_env(map="P  \n   \n  P"), [[0, 0]], [UP])
    act(env, MOVE_UP)
    act(env, MOVE_LEFT)
    assert env.get_state()["positions"][0, 0].tolist() == [0, 0]
    act(env, MOVE_DOWN)
    assert env.get_state()["positions"][0, 0].tolist() == [1, 0]


def test_every_floor_like_cell_is_walkable():
    corridor = "@@@@@@@@@@\n@PABHRS P@\n@@@@@@@@@@"
    env = place(make_env(map=corridor), [[1, 1]], [RIGHT])
    for _ in range(6):
        act(env, MOVE_UP)
    assert env.get_state()["positions"][0, 0].tolist() == [1, 7]


def test_contested_cell_has_one_uniform_winner():
    # agents at (4,3) and (4,5) both step into (4,4); over many envs each wins about half.
    env = place(make_env(num_agents=2, num_envs=4000), [[4, 3], [4, 5]], [RIGHT, LEFT])
    act(env, MOVE_UP, MOVE_UP)
    positions = env.get_state()["positions"]
    entered = np.all(positions == [4, 4], axis=2)  # [B, N]
    assert np.all(entered.sum(axis=1) == 1)
    wins = entered[:, 0].mean()
    assert abs(wins - 0.5) < 4 * np.sqrt(0.25 / 4000)
    losers_stayed = np.where(entered[:, :1], positions[:, 1] == [4, 5], positions[:, 0] == [4, 3])
    assert losers_stayed.all()


def test_three_way_contest_is_uniform():
    env = place(make_env(num_agents=3, num_envs=6000), [[4, 3], [4, 5], [3, 4]], [RIGHT, LEFT, DOWN])
    act(env, MOVE_UP, MOVE_UP, MOVE_UP)
    entered = np.all(env.get_state()["positions"] == [4, 4], axis=2)
    assert np.all(entered.sum(axis=1) == 1)
    shares = entered.mean(axis=0)
    assert np.all(np.abs(shares - 1 / 3) < 4 * np.sqrt((1 / 3) * (2 / 3) / 6000))


def test_swaps_are_blocked():
    env = place(make_env(num_agents=2), [[4, 3], [4, 4]], [RIGHT, LEFT])
    act(env, MOVE_UP, MOVE_UP)
    assert env.get_state()["positions"][0].tolist() == [[4, 3], [4, 4]]


def test_moving_into_a_staying_agent_fails_and_cascades():
    # a train of three moving right behind an agent that stays: nobody moves
    env = place(make_env(num_agents=4), [[4, 2], [4, 3], [4, 4], [4, 5]], [RIGHT] * 4)
    act(env, MOVE_UP, MOVE_UP, MOVE_UP, STAY)
    assert env.get_state()["positions"][0].tolist() == [[4, 2], [4, 3], [4, 4], [4, 5]]
    # the same train with the front agent moving: all move
    act(env, MOVE_UP, MOVE_UP, MOVE_UP, MOVE_UP)
    assert env.get_state()["positions"][0].tolist() == [[4, 3], [4, 4], [4, 5], [4, 6]]


def test_turning_or_firing_agents_block_like_stayers():
    for blocker_action in (TURN_CLOCKWISE, tiles.FIRE, tiles.CLEAN):
        env = place(make_env(num_agents=2), [[4, 3], [4, 4]], [RIGHT, UP])
        act(env, MOVE_UP, blocker_action)
        assert env.get_state()["positions"][0].tolist() == [[4, 3], [4, 4]]


def test_closed_cycle_rotates():
    # four agents on a 2x2 block each stepping to the next cell clockwise (the smallest
    # cycle on a square grid): all move.
    start = [[3, 3], [3, 4], [4, 4], [4, 3]]
    env = place(make_env(num_agents=4), start, [RIGHT, DOWN, LEFT, UP])
    act(env, MOVE_UP, MOVE_UP, MOVE_UP, MOVE_UP)
    assert env.get_state()["positions"][0].tolist() == [[3, 4], [4, 4], [4, 3], [3, 3]]


def test_contest_loser_blocks_the_agent_behind_it():
    # agent 2 follows agent 1; agents 0 and 1 contest (4,4); where 1 loses, 2 is blocked too.
    env = place(make_env(num_agents=3, num_envs=400), [[3, 4], [4, 5], [4, 6]], [DOWN, LEFT, LEFT])
    act(env, MOVE_UP, MOVE_UP, MOVE_UP)
    pos = env.get_state()["positions"]
    one_won = np.all(pos[:, 1] == [4, 4], axis=1)
    assert 0 < one_won.sum() < 400
    assert np.all(np.all(pos[one_won, 2] == [4, 5], axis=1))
    assert np.all(np.all(pos[~one_won, 2] == [4, 6], axis=1))
    assert np.all(np.all(pos[~one_won, 1] == [4, 5], axis=1))


SMALL_MAP = """\
@@@@@@@
@P P P@
@ @   @
@P  P @
@  @ P@
@P P  @
@@@@@@@"""
FREE_CELLS = [(r, c) for r, row in enumerate(SMALL_MAP.split("\n")) for c, ch in enumerate(row) if ch != "@"]


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.sampled_from(FREE_CELLS), min_size=6, max_size=6, unique=True),
    orientations=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    actions=st.lists(st.lists(st.integers(0, 8), min_size=6, max_size=6), min_size=1, max_size=6),
    seed=st.integers(0, 2**32),
)
def test_never_two_agents_on_one_cell(cells, orientations, actions, seed):
    env = make_env(map=SMALL_MAP, num_agents=6, seed=seed)
    place(env, cells, orientations)
    for step_actions in actions:
        before = env.get_state()["positions"][0].copy()
        act(env, *step_actions)
        after = env.get_state()["positions"][0]
        assert len({tuple(p) for p in after}) == 6
        assert np.all(np.abs(after - before).sum(axis=1) <= 1)  # at most one cell per step
