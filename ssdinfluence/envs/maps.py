"""ASCII maps and their parsing into static layout arrays.

Legend: ``@`` wall, ``P`` spawn point, ``A`` Harvest apple cell, ``B`` Cleanup orchard cell,
``H`` waste at reset, ``R`` river, ``S`` stream, space floor.

``A`` and ``B`` are both cells where apples grow, in either game (by that game's rule); they
differ only at reset: ``A`` starts with an apple, ``B`` starts empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tiles

HARVEST_MAP = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@ P   P      A    P AAAAA    P  A P  @
@  P     A P AA    P    AAA    A  A  @
@     A AAA  AAA    A    A AA AAAA   @
@ A  AAA A    A  A AAA  A  A   A A   @
@AAA  A A    A  AAA A  AAA        A P@
@ A A  AAA  AAA  A A    A AA   AA AA @
@  A A  AAA    A A  AAA    AAA  A    @
@   AAA  A      AAA  A    AAAA       @
@ P  A       A  A AAA    A  A      P @
@A  AAA  A  A  AAA A    AAAA     P   @
@    A A   AAA  A A      A AA   A  P @
@     AAA   A A  AAA      AA   AAA P @
@ A    A     AAA  A  P          A    @
@       P     A         P  P P     P @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@"""

CLEANUP_MAP = """\
@@@@@@@@@@@@@@@@@@
@RRRRRR     BBBBB@
@HHHHHH      BBBB@
@RRRRRR     BBBBB@
@RRRRR  P    BBBB@
@RRRRR    P BBBBB@
@HHHHH       BBBB@
@RRRRR      BBBBB@
@HHHHHHSSSSSSBBBB@
@HHHHHHSSSSSSBBBB@
@RRRRR   P P BBBB@
@HHHHH   P  BBBBB@
@RRRRRR    P BBBB@
@HHHHHH P   BBBBB@
@RRRRR       BBBB@
@HHHH    P  BBBBB@
@RRRRR       BBBB@
@HHHHH  P P BBBBB@
@RRRRR       BBBB@
@HHHH       BBBBB@
@RRRRR       BBBB@
@HHHHH      BBBBB@
@RRRRR       BBBB@
@HHHH       BBBBB@
@@@@@@@@@@@@@@@@@@"""

# Tile each legend character puts in the grid at reset (before the reset respawn pass).
# Harvest ``A`` cells start with an apple; Cleanup ``B`` cells start empty.
_LEGEND = {
    "@": tiles.WALL,
    " ": tiles.FLOOR,
    "P": tiles.FLOOR,
    "A": tiles.APPLE,
    "B": tiles.FLOOR,
    "H": tiles.WASTE,
    "R": tiles.RIVER,
    "S": tiles.STREAM,
}


@dataclass(frozen=True)
class MapLayout:
    """Static arrays derived from an ASCII map (never change during an episode).

    Attributes:
        text: the ASCII map, rows joined by newlines.
        initial_grid: ``[H, W] uint8`` tile codes at reset.
        spawn_points: ``[P, 2] int64`` (row, col) of ``P`` cells, row-major order.
        apple_cells: ``[Q, 2] int64`` cells where apples may grow (``A`` and ``B``), row-major.
        waste_cells: ``[M, 2] int64`` cells that can hold waste (``H`` and ``R``), row-major.
    """

    text: str
    initial_grid: np.ndarray
    spawn_points: np.ndarray
    apple_cells: np.ndarray
    waste_cells: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.initial_grid.shape


def _cells(chars: np.ndarray, which: str) -> np.ndarray:
    mask = np.isin(chars, list(which))
    return np.argwhere(mask).astype(np.int64).reshape(-1, 2)


def parse_map(text: str) -> MapLayout:
    """Parse an ASCII map; raise ``ValueError`` naming the problem if it is malformed.

    Leading and trailing blank lines are ignored; every other row must have the same width.
    Cells outside the map count as walls for movement and beams, so a map need not be
    enclosed by ``@``.
    """
    if not isinstance(text, str):
        raise ValueError(f"map must be an ASCII string, got {type(text).__name__}")
    rows = text.strip("\n").split("\n")
    if not rows or rows == [""]:
        raise ValueError("map is empty")
    widths = sorted({len(r) for r in rows})
    if len(widths) > 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise ValueError(
            f"map rows are ragged: row 0 has {len(rows[0])} characters, row {bad} has "
            f"{len(rows[bad])} (widths seen: {widths})"
        )
    unknown = sorted({ch for r in rows for ch in r} - set(_LEGEND))
    if unknown:
        raise ValueError(
            f"map has unknown characters {unknown}; legend: '@' wall, 'P' spawn, 'A' apple, "
            "'B' orchard, 'H' waste, 'R' river, 'S' stream, ' ' floor"
        )
    chars = np.array([list(r) for r in rows])
    spawn_points = _cells(chars, "P")
    if len(spawn_points) == 0:
        raise ValueError("map has no spawn point ('P')")
    initial_grid = np.vectorize(_LEGEND.__getitem__, otypes=[np.uint8])(chars)
    return MapLayout(
        text="\n".join(rows),
        initial_grid=initial_grid,
        spawn_points=spawn_points,
        apple_cells=_cells(chars, "AB"),
        waste_cells=_cells(chars, "HR"),
    )
