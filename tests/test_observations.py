"""Egocentric views: orientation, colours, beams, the reference's flip, visibility, render."""

from __future__ import annotations

import numpy as np
import pytest

from ssdinfluence.envs import tiles
from ssdinfluence.envs.tiles import DOWN, FIRE, LEFT, RIGHT, STAY, UP

from .helpers import act, make_env, place

APPLE_RGB = [0, 255, 0]
WALL_RGB = [180, 180, 180]
BLACK = [0, 0, 0]


def apples_around(orientation, ahead=3, left=2, size=15):
    """An open map with the agent at the centre and apples `ahead` cells in front of it
    and `left` cells to its left, for the given facing."""
    centre = size // 2
    fr, fc = tiles.FORWARD[orientation]
    lr, lc = -fc, fr  # left of forward
    rows = [["@"] * size] + [["@"] + [" "] * (size - 2) + ["@"] for _ in range(size - 2)] + [["@"] * size]
    rows[centre + ahead * fr][centre + ahead * fc] = "A"
    rows[centre + left * lr][centre + left * lc] = "A"
    rows[1][1] = "P"
    return "\n".join("".join(r) for r in rows), (centre, centre)


@pytest.mark.parametrize("orientation", [UP, RIGHT, DOWN, LEFT])
def test_apple_ahead_and_left_appear_in_place_for_every_facing(orientation):
    text, centre = apples_around(orientation)
    env = place(make_env("harvest", map=text, regrowth_probs=(0, 0, 0, 0)), [centre], [orientation])
    obs, _, _ = act(env, STAY)
    view = obs[0, 0]
    apples = {tuple(c) for c in np.argwhere(np.all(view == APPLE_RGB, axis=-1))}
    assert apples == {(4, 7), (7, 5)}
    assert view[7, 7].tolist() == list(tiles.BASE_AGENT_COLOURS[0])  # the agent sees itself at the centre


@pytest.mark.parametrize("orientation", [RIGHT, LEFT])
def test_reference_compat_flips_sideways_views(orientation):
    text, centre = apples_around(orientation)
    env = place(make_env("harvest", map=text, regrowth_probs=(0, 0, 0, 0), compat="reference"),
                [centre], [orientation])
    obs, _, _ = act(env, STAY)
    apples = {tuple(c) for c in np.argwhere(np.all(obs[0, 0] == APPLE_RGB, axis=-1))}
    assert apples == {(14 - 4, 14 - 7), (14 - 7, 14 - 5)}  # rotated by 180 degrees


@pytest.mark.parametrize("orientation", [UP, DOWN])
def test_reference_compat_keeps_vertical_views(orientation):
    text, centre = apples_around(orientation)
    env = place(make_env("harvest", map=text, regrowth_probs=(0, 0, 0, 0), compat="reference"),
                [centre], [orientation])
    obs, _, _ = act(env, STAY)
    apples = {tuple(c) for c in np.argwhere(np.all(obs[0, 0] == APPLE_RGB, axis=-1))}
    assert apples == {(4, 7), (7, 5)}


def test_outside_the_map_is_black_and_walls_grey():
    env = place(make_env(), [[1, 1]], [UP])  # the 9x9 open map, agent in a corner
    obs, _, _ = act(env, STAY)
    view = obs[0, 0]
    assert view[6, 7].tolist() == WALL_RGB  # the wall right in front
    assert view[5, 7].tolist() == BLACK  # beyond the map
    assert view[7, 6].tolist() == WALL_RGB  # the wall to the left
    assert view[7, 0].tolist() == BLACK  # 7 to the left: outside the map
    assert view[14, 14].tolist() == WALL_RGB  # 7 back, 7 right: the corner wall (8, 8)
    assert view[13, 13].tolist() == BLACK  # 6 back, 6 right: floor at (7, 7)


def test_terrain_colours():
    corridor = "@@@@@@@@@\n@PHRSBA @\n@@@@@@@@@"
    env = place(make_env(map=corridor, apple_respawn_prob=0.0), [[1, 1]], [RIGHT])
    obs, _, _ = act(env, STAY)
    ahead = [obs[0, 0, 7 - d, 7].tolist() for d in range(1, 7)]
    assert ahead == [[99, 156, 194], [113, 75, 24], [113, 75, 24], BLACK, APPLE_RGB, BLACK]


def test_agents_have_their_own_colours_and_are_drawn_over_beams():
    env = place(make_env(map="\n".join(["@" * 11] + ["@P       P@"] * 9 + ["@" * 11]), num_agents=3),
                [[5, 5], [3, 5], [5, 3]], [UP, UP, UP])
    obs, rewards, _ = act(env, FIRE, STAY, STAY)
    view = obs[0, 0]
    assert view[5, 7].tolist() == list(tiles.BASE_AGENT_COLOURS[1])  # hit agent drawn on the beam
    assert view[6, 7].tolist() == [255, 255, 0]  # fire beam between them
    assert view[7, 5].tolist() == list(tiles.BASE_AGENT_COLOURS[2])  # 2 to the left
    assert rewards[0].tolist() == [-1.0, -50.0, 0.0]
    other = obs[0, 1]  # agent 1 looks up; agent 0 is 2 behind it
    assert other[9, 7].tolist() == list(tiles.BASE_AGENT_COLOURS[0])
    assert other[8, 7].tolist() == [255, 255, 0]


def test_clean_beam_colour_and_invisible_beams_option():
    text = "\n".join(["@" * 9] + ["@P     P@"] * 7 + ["@" * 9])
    env = place(make_env(map=text), [[4, 4]], [UP])
    obs, _, _ = act(env, tiles.CLEAN)
    assert obs[0, 0, 6, 7].tolist() == [100, 255, 255]
    env = place(make_env(map=text, draw_beams=False), [[4, 4]], [UP])
    obs, _, _ = act(env, tiles.CLEAN)
    assert obs[0, 0, 6, 7].tolist() == BLACK
    assert env.get_state()["beams"][0, 3, 4] == tiles.BEAM_CLEAN  # still there, only not drawn


def test_many_agents_get_distinct_colours():
    colours = tiles.agent_colours(20)
    assert colours[:9].tolist() == [list(c) for c in tiles.BASE_AGENT_COLOURS]
    assert len({tuple(c) for c in colours}) == 20
    assert not any(tuple(c) in {tuple(t) for t in tiles.TILE_COLOURS} for c in colours[9:])


def test_visibility_mask():
    text = "\n".join(["@" * 22] + ["@P" + " " * 19 + "@"] * 20 + ["@" * 22])
    env = place(make_env(map=text, num_agents=3), [[1, 1], [8, 8], [9, 1]], [UP, UP, UP])
    _, _, info = act(env, STAY, STAY, STAY)
    visible = info["visible"][0]
    assert visible.tolist() == [[True, True, False], [True, True, True], [False, True, True]]


def test_render_shows_map_agents_and_beams():
    env = place(make_env(num_agents=2), [[4, 4], [1, 1]], [UP, LEFT])
    act(env, FIRE, STAY)
    frame = env.render(0, scale=4)
    assert frame.shape == (9 * 4, 9 * 4, 3) and frame.dtype == np.uint8
    assert frame[0, 0].tolist() == WALL_RGB
    assert frame[3 * 4 + 2, 4 * 4 + 2].tolist() == [255, 255, 0]  # a beam cell, centre pixel
    assert frame[4 * 4 + 2, 4 * 4 + 2].tolist() == list(tiles.BASE_AGENT_COLOURS[0])
    # facing marks: agent 0 faces up (top edge darker), agent 1 faces left (left edge darker)
    assert frame[4 * 4, 4 * 4 + 2].tolist() == [c // 2 for c in tiles.BASE_AGENT_COLOURS[0]]
    assert frame[1 * 4 + 2, 1 * 4].tolist() == [c // 2 for c in tiles.BASE_AGENT_COLOURS[1]]
    with pytest.raises(ValueError, match="index 3 out of range"):
        env.render(3)
