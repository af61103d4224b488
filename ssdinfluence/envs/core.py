"""Batched Numba kernels shared by Cleanup and Harvest: moves, eating, beams, views.

Every kernel works on a whole batch (``prange`` over envs), writes into caller-owned
arrays and allocates nothing. Each env draws from its own random stream (:mod:`.rng`), so
the result does not depend on the thread count.

Step semantics and random-draw protocol (per env; a slow reference in the tests follows
exactly this contract):

0. Clear this step's beam layer; ``step += 1``.
1. Turns and moves. A turn changes the orientation only. A move targets
   ``pos + dir`` (egocentric: UP forward, DOWN back, LEFT/RIGHT to the agent's own side); a
   target outside the map or on a wall means the agent stays. Then:
   a. contests: for each agent k in index order whose target is not yet settled, the movers
      with the same target (index order) are its contenders; if there are c > 1, one draw
      ``randint(c)`` picks the winner and the others stay;
   b. swaps: two movers targeting each other's cells both stay;
   c. fixpoint: a mover whose target holds an agent that is not moving stays; repeat until
      nothing changes. Remaining movers move (chains and closed cycles rotate). No two agents
      ever share a cell.
2. Eating: an agent on an apple gets ``apple_reward`` and the apple becomes floor.
3. Beams: shooters (FIRE, CLEAN) in index order are shuffled by Fisher-Yates
   (``for i = n-1..1: j = randint(i+1); swap(i, j)``). Each shooter in that order fires three
   rays: centre (forward distance 1..L) and left/right (the side cell and forward 0..L-1).
   A ray stops before a wall or the map edge; it covers and stops at the first agent (FIRE:
   that agent gets ``-hit_penalty`` and ``hits[b, shooter, agent]`` counts it) and, for
   CLEAN, at the first waste (turned into river). FIRE costs the shooter ``fire_cost``.
4. Respawn: the game's own rule (``harvest.respawn`` / ``cleanup.respawn``).
5. Truncation at ``horizon``, then views and the visibility mask.

Reset (per env): the initial grid; agents take spawn points by a partial Fisher-Yates over
the spawn list (``for k: j = k + randint(P - k)``), then orientations ``randint(4)`` for
each agent in order; then one respawn pass.

The batch kernels take their arrays grouped by role, as tuples in this order (Numba unpacks
them at no cost; a named tuple would cost a few microseconds per call):

* ``world``: what never changes for an env object: ``game`` (HARVEST or CLEANUP),
  ``initial_grid`` [H, W] uint8, ``spawn_points`` [P, 2], ``apple_cells``, ``waste_cells``
  [*, 2] int64, ``offsets`` [*, 2] int64 and ``params`` float64 (the game's respawn rule),
  ``palette`` [codes, 3] uint8, ``draw_beams``, ``flip_sideways`` (bool), ``horizon``,
  ``beam_length`` (int), ``apple_reward``, ``fire_cost``, ``hit_penalty`` (float32);
* ``state``: ``grid`` [B, H, W] uint8, ``positions`` [B, N, 2] int32, ``orientations``
  [B, N] int8, ``occupancy`` [B, H, W] int16 (agent index or -1), ``beams`` [B, H, W] uint8,
  ``step_count`` [B] int32, ``prev_actions`` [B, N] int32, ``returns`` [B, N] float32,
  ``rng`` [B] uint64;
* ``scratch``: ``target`` [B, N, 2] int64, ``moving``, ``settled`` [B, N] bool, ``order``
  [B, N] int64, ``spawn_perm`` [B, P] int64, ``grow`` [B, *] bool, ``view`` [B, H + 14, W + 14]
  uint8;
* ``out``: ``obs`` [B, N, 15, 15, 3] uint8, ``rewards`` [B, N] float32, ``truncated`` [B]
  bool, ``final_obs`` like ``obs``, ``episode_returns`` [B, N] float32, ``visible`` [B, N, N]
  bool.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cleanup, harvest, tiles
from .rng import randint

HARVEST = 0
CLEANUP = 1

_R = tiles.VIEW_RADIUS
_S = tiles.VIEW_SIZE
_FORWARD = tiles.FORWARD


@njit(cache=True, inline="always")
def _directions(orientation, flip_sideways):
    """Forward and right unit vectors of an orientation, as (fr, fc, rr, rc).

    ``flip_sideways`` reproduces the reference's 180-degree flip of LEFT/RIGHT-facing views.
    """
    fr = _FORWARD[orientation, 0]
    fc = _FORWARD[orientation, 1]
    rr, rc = fc, -fr  # right is one clockwise turn from forward
    if flip_sideways and (orientation == tiles.RIGHT or orientation == tiles.LEFT):
        return -fr, -fc, -rr, -rc
    return fr, fc, rr, rc


@njit(cache=True)
def _respawn(game, b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow):
    if game == HARVEST:
        harvest.respawn(b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow)
    else:
        cleanup.respawn(b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow)


@njit(cache=True)
def _move(b, actions, grid, positions, orientations, occupancy, rng, target, moving, settled):
    num_agents = positions.shape[1]
    height, width = grid.shape[1], grid.shape[2]
    for k in range(num_agents):
        a = actions[b, k]
        row, col = positions[b, k, 0], positions[b, k, 1]
        target[b, k, 0] = row
        target[b, k, 1] = col
        moving[b, k] = False
        settled[b, k] = False
        if a == tiles.TURN_CLOCKWISE:
            orientations[b, k] = (orientations[b, k] + 1) % 4
        elif a == tiles.TURN_COUNTERCLOCKWISE:
            orientations[b, k] = (orientations[b, k] + 3) % 4
        elif a <= tiles.MOVE_DOWN:
            fr, fc, rr, rc = _directions(orientations[b, k], False)
            if a == tiles.MOVE_UP:
                dr, dc = fr, fc
            elif a == tiles.MOVE_DOWN:
                dr, dc = -fr, -fc
            elif a == tiles.MOVE_RIGHT:
                dr, dc = rr, rc
            else:
                dr, dc = -rr, -rc
            nr, nc = row + dr, col + dc
            if 0 <= nr < height and 0 <= nc < width and grid[b, nr, nc] != tiles.WALL:
                target[b, k, 0] = nr
                target[b, k, 1] = nc
                moving[b, k] = True

    # a. contested cells: one uniformly random winner among the movers wanting the cell
    for k in range(num_agents):
        if not moving[b, k] or settled[b, k]:
            continue
        contenders = 0
        for j in range(k, num_agents):
            if moving[b, j] and target[b, j, 0] == target[b, k, 0] and target[b, j, 1] == target[b, k, 1]:
                contenders += 1
        winner = randint(rng, b, contenders) if contenders > 1 else 0
        for j in range(k, num_agents):
            if moving[b, j] and target[b, j, 0] == target[b, k, 0] and target[b, j, 1] == target[b, k, 1]:
                settled[b, j] = True
                if winner != 0:
                    moving[b, j] = False
                winner -= 1

    # b. swaps: two agents walking through each other both stay
    for k in range(num_agents):
        for j in range(k + 1, num_agents):
            if (
                moving[b, k]
                and moving[b, j]
                and target[b, k, 0] == positions[b, j, 0]
                and target[b, k, 1] == positions[b, j, 1]
                and target[b, j, 0] == positions[b, k, 0]
                and target[b, j, 1] == positions[b, k, 1]
            ):
                moving[b, k] = False
                moving[b, j] = False

    # c. fixpoint: moving into a cell whose occupant stays fails, which may cascade
    changed = True
    while changed:
        changed = False
        for k in range(num_agents):
            if moving[b, k]:
                occupant = occupancy[b, target[b, k, 0], target[b, k, 1]]
                if occupant >= 0 and not moving[b, occupant]:
                    moving[b, k] = False
                    changed = True

    for k in range(num_agents):
        if moving[b, k]:
            occupancy[b, positions[b, k, 0], positions[b, k, 1]] = -1
    for k in range(num_agents):
        if moving[b, k]:
            positions[b, k, 0] = target[b, k, 0]
            positions[b, k, 1] = target[b, k, 1]
            occupancy[b, target[b, k, 0], target[b, k, 1]] = k


@njit(cache=True)
def _ray(b, shooter, row, col, dr, dc, first, length, is_fire, grid, beams, occupancy, rewards, hit_penalty, hits):
    """Trace one ray from (row, col) along (dr, dc), covering forward distances first..length-1+first."""
    height, width = grid.shape[1], grid.shape[2]
    for d in range(first, first + length):
        r, c = row + d * dr, col + d * dc
        if r < 0 or r >= height or c < 0 or c >= width or grid[b, r, c] == tiles.WALL:
            return
        beams[b, r, c] = tiles.BEAM_FIRE if is_fire else tiles.BEAM_CLEAN
        if not is_fire and grid[b, r, c] == tiles.WASTE:
            grid[b, r, c] = tiles.RIVER
            return
        occupant = occupancy[b, r, c]
        if occupant >= 0 and occupant != shooter:
            if is_fire:
                rewards[b, occupant] -= hit_penalty
                hits[b, shooter, occupant] += 1
            return


@njit(cache=True)
def _fire_beams(b, actions, grid, positions, orientations, occupancy, beams, rewards, rng, order, beam_length, fire_cost,
                hit_penalty, hits):
    num_agents = positions.shape[1]
    n = 0
    for k in range(num_agents):
        if actions[b, k] == tiles.FIRE or actions[b, k] == tiles.CLEAN:
            order[b, n] = k
            n += 1
    for i in range(n - 1, 0, -1):
        j = randint(rng, b, i + 1)
        order[b, i], order[b, j] = order[b, j], order[b, i]
    for i in range(n):
        k = order[b, i]
        is_fire = actions[b, k] == tiles.FIRE
        if is_fire:
            rewards[b, k] -= fire_cost
        row, col = positions[b, k, 0], positions[b, k, 1]
        fr, fc, rr, rc = _directions(orientations[b, k], False)
        _ray(b, k, row, col, fr, fc, 1, beam_length, is_fire, grid, beams, occupancy, rewards, hit_penalty, hits)
        for side in (-1, 1):
            _ray(b, k, row + side * rr, col + side * rc, fr, fc, 0, beam_length, is_fire, grid, beams, occupancy, rewards,
                 hit_penalty, hits)


@njit(cache=True)
def _reset_env(b, world, state, spawn_perm, grow):
    game, initial_grid, spawn_points, apple_cells, waste_cells, offsets, params = world[:7]
    grid, positions, orientations, occupancy, beams, step_count, prev_actions, returns, rng = state
    grid[b] = initial_grid
    beams[b] = tiles.NO_BEAM
    occupancy[b] = -1
    step_count[b] = 0
    num_agents = positions.shape[1]
    num_spawns = spawn_points.shape[0]
    for i in range(num_spawns):
        spawn_perm[b, i] = i
    for k in range(num_agents):
        j = k + randint(rng, b, num_spawns - k)
        spawn_perm[b, k], spawn_perm[b, j] = spawn_perm[b, j], spawn_perm[b, k]
        positions[b, k, 0] = spawn_points[spawn_perm[b, k], 0]
        positions[b, k, 1] = spawn_points[spawn_perm[b, k], 1]
        occupancy[b, positions[b, k, 0], positions[b, k, 1]] = k
    for k in range(num_agents):
        orientations[b, k] = randint(rng, b, 4)
        prev_actions[b, k] = tiles.STAY
        returns[b, k] = 0.0
    _respawn(game, b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow)


@njit(cache=True)
def _observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible):
    """Write env ``b``'s agent views into ``obs[b]`` ([N, 15, 15, 3] uint8) and ``visible[b]``.

    ``view`` ([B, H + 14, W + 14] uint8) holds the composed codes with a border of floor, so
    the window never needs bounds checks.
    """
    height, width = grid.shape[1], grid.shape[2]
    num_agents = positions.shape[1]
    for r in range(height):
        for c in range(width):
            code = grid[b, r, c]
            if draw_beams:
                beam = beams[b, r, c]
                if beam == tiles.BEAM_FIRE:
                    code = tiles.FIRE_BEAM
                elif beam == tiles.BEAM_CLEAN:
                    code = tiles.CLEAN_BEAM
            view[b, r + _R, c + _R] = code
    for k in range(num_agents):
        view[b, positions[b, k, 0] + _R, positions[b, k, 1] + _R] = tiles.AGENT_BASE + k
    for k in range(num_agents):
        fr, fc, rr, rc = _directions(orientations[b, k], flip_sideways)
        # obs[r, c] shows the cell (7 - r) ahead and (c - 7) to the right of the agent.
        pr, pc = positions[b, k, 0] + _R, positions[b, k, 1] + _R
        for r in range(_S):
            row = pr + (_R - r) * fr - _R * rr
            col = pc + (_R - r) * fc - _R * rc
            for c in range(_S):
                code = view[b, row, col]
                obs[b, k, r, c, 0] = palette[code, 0]
                obs[b, k, r, c, 1] = palette[code, 1]
                obs[b, k, r, c, 2] = palette[code, 2]
                row += rr
                col += rc
        for j in range(num_agents):
            visible[b, k, j] = (
                abs(positions[b, j, 0] - positions[b, k, 0]) <= _R
                and abs(positions[b, j, 1] - positions[b, k, 1]) <= _R
            )


@njit(cache=True, parallel=True)
def reset_kernel(env_mask, world, state, scratch, out):
    """Reset the envs where ``env_mask`` ([B] bool) is set and write their first views."""
    palette, draw_beams, flip_sideways = world[7:10]
    grid, positions, orientations, occupancy, beams = state[:5]
    spawn_perm, grow, view = scratch[4:]
    obs, visible = out[0], out[5]
    for b in prange(grid.shape[0]):
        if env_mask[b]:
            _reset_env(b, world, state, spawn_perm, grow)
            _observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible)


@njit(cache=True, parallel=True)
def observe_kernel(grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible):
    """Write every env's views and visibility from its current state (after ``set_state``)."""
    for b in prange(grid.shape[0]):
        _observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible)


@njit(cache=True, parallel=True)
def step_kernel(actions, world, state, scratch, out):
    """Advance every env one step (see the module docstring) with autoreset.

    Inputs: ``actions`` [B, N] int32 (validated by the caller). Outputs written in place
    (``out``): ``obs`` [B, N, 15, 15, 3] uint8, ``rewards`` [B, N] float32, ``truncated`` [B]
    bool, ``visible`` [B, N, N] bool, ``hits`` [B, N, N] int32 (this step's); where truncated, ``final_obs`` [B, N, 15, 15, 3] and
    ``episode_returns`` [B, N] float32 hold the finished episode's last view and returns,
    and ``obs`` the new episode's first view.
    """
    game, _, _, apple_cells, waste_cells, offsets, params, palette = world[:8]
    draw_beams, flip_sideways, horizon, beam_length, apple_reward, fire_cost, hit_penalty = world[8:]
    grid, positions, orientations, occupancy, beams, step_count, prev_actions, returns, rng = state
    target, moving, settled, order, spawn_perm, grow, view = scratch
    obs, rewards, truncated, final_obs, episode_returns, visible, hits = out
    num_agents = positions.shape[1]
    for b in prange(grid.shape[0]):
        beams[b] = tiles.NO_BEAM
        hits[b] = 0
        step_count[b] += 1
        for k in range(num_agents):
            rewards[b, k] = 0.0
        _move(b, actions, grid, positions, orientations, occupancy, rng, target, moving, settled)
        for k in range(num_agents):
            row, col = positions[b, k, 0], positions[b, k, 1]
            if grid[b, row, col] == tiles.APPLE:
                grid[b, row, col] = tiles.FLOOR
                rewards[b, k] += apple_reward
        _fire_beams(b, actions, grid, positions, orientations, occupancy, beams, rewards, rng, order, beam_length, fire_cost,
                    hit_penalty, hits)
        _respawn(game, b, grid, occupancy, apple_cells, waste_cells, offsets, params, rng, grow)
        for k in range(num_agents):
            returns[b, k] += rewards[b, k]
            prev_actions[b, k] = actions[b, k]
        _observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible)
        truncated[b] = step_count[b] >= horizon
        if truncated[b]:
            final_obs[b] = obs[b]
            for k in range(num_agents):
                episode_returns[b, k] = returns[b, k]
            _reset_env(b, world, state, spawn_perm, grow)
            _observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip_sideways, obs, visible)


@njit(cache=True)
def render_codes(b, grid, positions, beams, out):
    """Whole-map view codes of env ``b`` with beams and agents, into ``out`` ([H, W] uint8)."""
    height, width = grid.shape[1], grid.shape[2]
    for r in range(height):
        for c in range(width):
            beam = beams[b, r, c]
            if beam == tiles.BEAM_FIRE:
                out[r, c] = tiles.FIRE_BEAM
            elif beam == tiles.BEAM_CLEAN:
                out[r, c] = tiles.CLEAN_BEAM
            else:
                out[r, c] = grid[b, r, c]
    for k in range(positions.shape[1]):
        out[positions[b, k, 0], positions[b, k, 1]] = tiles.AGENT_BASE + k


def rebuild_occupancy(positions: np.ndarray, occupancy: np.ndarray) -> None:
    """Recompute the derived ``occupancy`` ([B, H, W] int16, agent index or -1) from positions."""
    occupancy.fill(-1)
    num_envs, num_agents = positions.shape[:2]
    env_index = np.repeat(np.arange(num_envs), num_agents)
    occupancy[env_index, positions[..., 0].ravel(), positions[..., 1].ravel()] = np.tile(
        np.arange(num_agents, dtype=occupancy.dtype), num_envs
    )
