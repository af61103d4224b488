"""Cleanup's own rules: apples grow only while the river is clean enough.

``game_params`` layout (float64): ``[apple_respawn_prob, waste_spawn_prob,
depletion_threshold, restoration_threshold, waste_spawn_mode]`` with waste_spawn_mode 0 for
"shuffle" (the reference: waste lands on the first of the shuffled clean river cells that
passes a coin flip, so almost always exactly one per step) and 1 for "single" (one uniformly
random clean river cell with probability ``waste_spawn_prob``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import tiles
from .rng import randint, uniform

NUM_ACTIONS = 9
WASTE_SPAWN_MODES = {"shuffle": 0, "single": 1}


def game_params(
    apple_respawn_prob: float = 0.05,
    waste_spawn_prob: float = 0.5,
    depletion_threshold: float = 0.4,
    restoration_threshold: float = 0.0,
    waste_spawn_mode: str = "shuffle",
) -> np.ndarray:
    for name, value in (
        ("apple_respawn_prob", apple_respawn_prob),
        ("waste_spawn_prob", waste_spawn_prob),
        ("depletion_threshold", depletion_threshold),
        ("restoration_threshold", restoration_threshold),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if not restoration_threshold < depletion_threshold:
        raise ValueError(
            f"restoration_threshold ({restoration_threshold}) must be below "
            f"depletion_threshold ({depletion_threshold})"
        )
    if waste_spawn_mode not in WASTE_SPAWN_MODES:
        raise ValueError(
            f"unknown waste_spawn_mode {waste_spawn_mode!r}; choose from {sorted(WASTE_SPAWN_MODES)}"
        )
    return np.array(
        [
            apple_respawn_prob,
            waste_spawn_prob,
            depletion_threshold,
            restoration_threshold,
            WASTE_SPAWN_MODES[waste_spawn_mode],
        ],
        dtype=np.float64,
    )


def kernel_params(params) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' view of Cleanup's rule parameters (an ``EnvParams``): :func:`game_params`,
    and no neighbour offsets (apples respawn by the river's waste density, not by neighbours)."""
    return (game_params(params.apple_respawn_prob, params.waste_spawn_prob, params.depletion_threshold,
                        params.restoration_threshold, params.waste_spawn_mode),
            np.zeros((0, 2), dtype=np.int64))


@njit(cache=True, inline="always")
def apple_probability(waste_density, params):
    """Per-cell apple growth probability at this waste density (0 at or above depletion)."""
    apple_prob, depletion, restoration = params[0], params[2], params[3]
    if waste_density >= depletion:
        return 0.0
    if waste_density <= restoration:
        return apple_prob
    return apple_prob * (1.0 - (waste_density - restoration) / (depletion - restoration))


@njit(cache=True, inline="always")
def waste_count(grid, b, waste_cells):
    """Env ``b``'s river cells (``waste_cells [M, 2]``) that hold waste."""
    waste = 0
    for i in range(waste_cells.shape[0]):
        if grid[b, waste_cells[i, 0], waste_cells[i, 1]] == tiles.WASTE:
            waste += 1
    return waste


@njit(cache=True)
def waste_fractions(grid, waste_cells, out):
    """``out [B] float64``: each env's share of its ``M >= 1`` river cells that hold waste
    (``grid [B, H, W] uint8``); written in place, so a trainer can read it every step."""
    for b in range(grid.shape[0]):
        out[b] = waste_count(grid, b, waste_cells) / waste_cells.shape[0]


@njit(cache=True)
def respawn(b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow):
    """Grow apples and spawn waste in env ``b`` from the current waste density.

    Draws, in order: one uniform per empty unoccupied orchard cell (row-major) when the apple
    probability is non-zero; then, if any river cell is clean, one uniform for "does waste
    appear" and one integer for which clean cell (row-major index among clean cells).
    """
    num_waste_cells = waste_cells.shape[0]
    waste = waste_count(grid, b, waste_cells)
    density = waste / num_waste_cells if num_waste_cells > 0 else 0.0
    if density >= params[2]:
        return
    p_apple = apple_probability(density, params)
    if p_apple > 0.0:
        for i in range(apple_cells.shape[0]):
            row, col = apple_cells[i, 0], apple_cells[i, 1]
            if grid[b, row, col] != tiles.APPLE and occupancy[b, row, col] < 0:
                if uniform(rng, b) < p_apple:
                    grid[b, row, col] = tiles.APPLE
    clean = num_waste_cells - waste
    waste_prob = params[1]
    if clean == 0 or waste_prob <= 0.0:
        return
    if params[4] == 0.0:
        # Walking `clean` cells in random order with a coin flip each: some cell succeeds
        # with probability 1 - (1 - p)^clean, and by symmetry it is uniform among them.
        p_any = 1.0 - (1.0 - waste_prob) ** clean
    else:
        p_any = waste_prob
    if uniform(rng, b) >= p_any:
        return
    target = randint(rng, b, clean)
    for i in range(num_waste_cells):
        row, col = waste_cells[i, 0], waste_cells[i, 1]
        if grid[b, row, col] != tiles.WASTE:
            if target == 0:
                grid[b, row, col] = tiles.WASTE
                return
            target -= 1
