"""Harvest's own rules: apples regrow faster next to other apples.

Only the respawn rule is game-specific; moves, eating, beams and observations live in
:mod:`ssdinfluence.envs.core`.

``game_params`` layout (float64): ``[p(0 neighbours), p(1), p(2), p(>=3)]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import tiles
from .rng import uniform

NUM_ACTIONS = 8
DEFAULT_REGROWTH_PROBS = (0.0, 0.005, 0.02, 0.05)

# The reference's code counts apples in the 3x3 block around a cell (its documentation
# intended the 3x3 block plus the four cells at distance 2: "radius2").
NEIGHBOURHOODS = {
    "3x3": [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)],
    "radius2": [
        (dr, dc)
        for dr in range(-2, 3)
        for dc in range(-2, 3)
        if (dr, dc) != (0, 0) and dr * dr + dc * dc <= 4
    ],
}


def game_params(regrowth_probs=DEFAULT_REGROWTH_PROBS) -> np.ndarray:
    probs = np.asarray(regrowth_probs, dtype=np.float64)
    if probs.shape != (4,) or np.any(probs < 0) or np.any(probs > 1):
        raise ValueError(
            f"regrowth_probs must be 4 probabilities in [0, 1] (for 0, 1, 2, >=3 neighbouring "
            f"apples), got {regrowth_probs!r}"
        )
    return probs


def kernel_params(params) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' view of Harvest's rule parameters (an ``EnvParams``): the regrowth
    probabilities (float64 [4]) and the neighbourhood's offsets ([K, 2] int64)."""
    return game_params(params.regrowth_probs), neighbour_offsets(params.regrowth_neighbourhood)


def neighbour_offsets(neighbourhood: str = "3x3") -> np.ndarray:
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(
            f"unknown regrowth_neighbourhood {neighbourhood!r}; choose from {sorted(NEIGHBOURHOODS)}"
        )
    return np.array(NEIGHBOURHOODS[neighbourhood], dtype=np.int64)


@njit(cache=True)
def respawn(b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow):
    """Grow apples on env ``b``'s empty, unoccupied apple cells.

    The neighbour count uses the map before this pass's growth, so growth is decided for all
    cells first (``grow``: ``[B, Q] bool`` scratch) and applied after. One uniform draw per
    eligible cell with non-zero probability, in row-major order.
    """
    height, width = grid.shape[1], grid.shape[2]
    for i in range(apple_cells.shape[0]):
        row, col = apple_cells[i, 0], apple_cells[i, 1]
        grow[b, i] = False
        if grid[b, row, col] == tiles.APPLE or occupancy[b, row, col] >= 0:
            continue
        count = 0
        for o in range(offsets.shape[0]):
            r, c = row + offsets[o, 0], col + offsets[o, 1]
            if 0 <= r < height and 0 <= c < width and grid[b, r, c] == tiles.APPLE:
                count += 1
        p = params[min(count, 3)]
        if p > 0.0 and uniform(rng, b) < p:
            grow[b, i] = True
    for i in range(apple_cells.shape[0]):
        if grow[b, i]:
            grid[b, apple_cells[i, 0], apple_cells[i, 1]] = tiles.APPLE
