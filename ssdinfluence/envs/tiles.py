"""Integer codes: the single source of truth for tiles, actions, orientations and colours.

Everything visual (observations, renders, logs) is derived from these codes through
:data:`PALETTE`. The env state stores only codes (``uint8``), never colours.
"""

from __future__ import annotations

import colorsys

import numpy as np

# --- dynamic tiles stored in the grid [B, H, W] uint8 ------------------------------------
FLOOR = 0  # also the colour of cells outside the map
WALL = 1
APPLE = 2
WASTE = 3
RIVER = 4
STREAM = 5
# --- overlay codes, only ever in the composed view (never in the grid) -------------------
FIRE_BEAM = 6
CLEAN_BEAM = 7
AGENT_BASE = 8  # agent k is drawn with code AGENT_BASE + k

NUM_TILE_CODES = AGENT_BASE
MAX_AGENTS = 256 - AGENT_BASE
TILE_NAMES = ("floor", "wall", "apple", "waste", "river", "stream", "fire_beam", "clean_beam")

# --- beams stored in the beam layer [B, H, W] uint8 ---------------------------------------
NO_BEAM = 0
BEAM_FIRE = 1
BEAM_CLEAN = 2

# --- actions (egocentric moves) -----------------------------------------------------------
MOVE_LEFT = 0
MOVE_RIGHT = 1
MOVE_UP = 2
MOVE_DOWN = 3
STAY = 4
TURN_CLOCKWISE = 5
TURN_COUNTERCLOCKWISE = 6
FIRE = 7
CLEAN = 8
ACTION_NAMES = (
    "MOVE_LEFT",
    "MOVE_RIGHT",
    "MOVE_UP",
    "MOVE_DOWN",
    "STAY",
    "TURN_CLOCKWISE",
    "TURN_COUNTERCLOCKWISE",
    "FIRE",
    "CLEAN",
)

# --- orientations; clockwise order, so turning clockwise is (o + 1) % 4 -------------------
UP = 0
RIGHT = 1
DOWN = 2
LEFT = 3
ORIENTATION_NAMES = ("UP", "RIGHT", "DOWN", "LEFT")
# (d_row, d_col) of one step forward for each orientation; row index grows downward.
FORWARD = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int64)

# --- observation geometry ------------------------------------------------------------------
VIEW_RADIUS = 7
VIEW_SIZE = 2 * VIEW_RADIUS + 1

# --- colours (RGB) -------------------------------------------------------------------------
TILE_COLOURS = np.array(
    [
        (0, 0, 0),  # floor / outside
        (180, 180, 180),  # wall
        (0, 255, 0),  # apple
        (99, 156, 194),  # waste
        (113, 75, 24),  # river
        (113, 75, 24),  # stream
        (255, 255, 0),  # fire beam
        (100, 255, 255),  # clean beam
    ],
    dtype=np.uint8,
)
BASE_AGENT_COLOURS = (
    (0, 0, 255),
    (2, 81, 154),
    (204, 0, 204),
    (216, 30, 54),
    (254, 151, 0),
    (100, 255, 255),
    (99, 99, 255),
    (250, 204, 255),
    (238, 223, 16),
)


def agent_colours(num_agents: int) -> np.ndarray:
    """Colours of ``num_agents`` agents, ``[N, 3] uint8``.

    The first nine are the spec's; further agents get distinct hues spread by the golden
    ratio (deterministic, so logs and renders agree across runs).
    """
    colours = list(BASE_AGENT_COLOURS[:num_agents])
    k = 0
    while len(colours) < num_agents:
        hue = (0.13 + 0.618033988749895 * k) % 1.0
        saturation = 0.55 + 0.45 * ((k // 7) % 2)
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
        k += 1
    return np.array(colours, dtype=np.uint8).reshape(num_agents, 3)


def make_palette(num_agents: int) -> np.ndarray:
    """Colour of every view code, ``[AGENT_BASE + N, 3] uint8`` (index with a code)."""
    return np.concatenate([TILE_COLOURS, agent_colours(num_agents)], axis=0)
