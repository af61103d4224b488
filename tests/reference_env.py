"""A slow, deliberately plain reference implementation of ONE Cleanup or Harvest env.

This is the oracle for ``test_parity.py``. It is written from the rules in
``docs/environments.md`` and the random-draw protocol stated in the docstrings of
``ssdinfluence/envs/core.py``, ``harvest.py`` and ``cleanup.py`` -- never from the kernels'
code. It does not import ``core``, ``harvest`` or ``cleanup``; it uses only the tile codes
and palette (``tiles``), the map parser (``maps``, for validation and row normalisation),
the per-env random stream (``rng``: ``uniform`` / ``randint`` on a 1-element ``uint64``
array, so the stream is the kernels' stream for that env) and ``EnvParams`` for parameter
values.

Everything is explicit: per-agent loops, positions as ``(row, col)`` tuples, beams as a
dict ``{cell: beam kind}``, one observation cell at a time.

Random-draw protocol (what consumes the env's stream, in order):

reset
  1. partial Fisher-Yates over the spawn list (row-major ``P`` cells):
     for k in 0..N-1: ``j = k + randint(P - k)``; swap; agent k takes ``spawn[perm[k]]``;
  2. ``randint(4)`` orientation for each agent in index order;
  3. one respawn pass (below).
step
  1. moves: one ``randint(c)`` per contested cell with c > 1 contenders, cells taken in the
     order of their lowest-index contender;
  2. beams: Fisher-Yates over the shooters (FIRE/CLEAN, index order):
     ``for i = n-1..1: j = randint(i+1); swap(i, j)``;
  3. respawn:
     Harvest -- one ``uniform`` per empty, unoccupied ``A`` cell (row-major) whose growth
     probability is non-zero;
     Cleanup -- if density < depletion: one ``uniform`` per empty unoccupied ``B`` cell
     (row-major) when the apple probability is non-zero; then, if some ``H``/``R`` cell is
     clean and waste_spawn_prob > 0, one ``uniform`` ("does waste appear") and, if it does,
     one ``randint(#clean)`` (row-major index among the clean cells).
  4. at the horizon: the reset protocol above.
"""

from __future__ import annotations

import collections

import numpy as np

from ssdinfluence.envs import tiles
from ssdinfluence.envs.base import EnvParams
from ssdinfluence.envs.maps import CLEANUP_MAP, HARVEST_MAP, parse_map
from ssdinfluence.envs.rng import randint as _rng_randint
from ssdinfluence.envs.rng import uniform as _rng_uniform

# ----------------------------------------------------------------------------- rules
VIEW_RADIUS = 7
VIEW_SIZE = 15

# Orientation -> one step forward (d_row, d_col); clockwise order UP, RIGHT, DOWN, LEFT.
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
FORWARD_STEP = {UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}

MOVE_LEFT, MOVE_RIGHT, MOVE_UP, MOVE_DOWN = 0, 1, 2, 3
STAY, TURN_CLOCKWISE, TURN_COUNTERCLOCKWISE, FIRE, CLEAN = 4, 5, 6, 7, 8
MOVE_ACTIONS = (MOVE_LEFT, MOVE_RIGHT, MOVE_UP, MOVE_DOWN)

NUM_ACTIONS = {"harvest": 8, "cleanup": 9}
DEFAULT_MAPS = {"harvest": HARVEST_MAP, "cleanup": CLEANUP_MAP}

# Legend: what each map character puts in the grid at reset.
INITIAL_TILE = {
    "@": tiles.WALL,
    " ": tiles.FLOOR,
    "P": tiles.FLOOR,
    "A": tiles.APPLE,  # Harvest: an apple on every A cell at reset
    "B": tiles.FLOOR,  # Cleanup orchard: no apple at reset
    "H": tiles.WASTE,  # Cleanup: waste on every H cell at reset
    "R": tiles.RIVER,
    "S": tiles.STREAM,
}

# Harvest regrowth neighbourhoods: the 3x3 block, or the 3x3 block plus the four cells at
# distance 2 in a straight line ("radius2").
NEIGHBOURS_3X3 = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
NEIGHBOURS_RADIUS2 = NEIGHBOURS_3X3 + [(-2, 0), (2, 0), (0, -2), (0, 2)]


def right_of(orientation: int) -> int:
    """The orientation one clockwise turn away (the agent's right-hand side)."""
    return (orientation + 1) % 4


def left_of(orientation: int) -> int:
    return (orientation + 3) % 4


def behind(orientation: int) -> int:
    return (orientation + 2) % 4


class ReferenceEnv:
    """One env of ``game`` ("harvest" or "cleanup") with ``num_agents`` agents.

    ``rng_state`` is this env's SplitMix64 state word (e.g. ``seed_states(seed, B)[b]``).
    Call :meth:`reset` first, or build it from a kernel env with :meth:`from_batched`.
    """

    def __init__(self, game: str, num_agents: int, map_text: str | None = None,
                 params: EnvParams | None = None, rng_state: int = 0):
        if game not in NUM_ACTIONS:
            raise ValueError(f"unknown game {game!r}")
        self.game = game
        self.params = EnvParams() if params is None else params
        self.num_agents = int(num_agents)
        self.num_actions = NUM_ACTIONS[game]

        # --- the map, read character by character (parse_map only validates/normalises)
        text = parse_map(DEFAULT_MAPS[game] if map_text is None else map_text).text
        self.map_rows = text.split("\n")
        self.height = len(self.map_rows)
        self.width = len(self.map_rows[0])
        self.initial_grid = np.zeros((self.height, self.width), np.uint8)
        self.spawn_points = []  # row-major
        self.orchard_cells = []  # Harvest: A cells; Cleanup: B cells (row-major)
        self.river_cells = []  # Cleanup: H and R cells (row-major)
        orchard_char = "A" if game == "harvest" else "B"
        for r, line in enumerate(self.map_rows):
            for c, ch in enumerate(line):
                self.initial_grid[r, c] = INITIAL_TILE[ch]
                if ch == "P":
                    self.spawn_points.append((r, c))
                if ch == orchard_char:
                    self.orchard_cells.append((r, c))
                if ch in "HR":
                    self.river_cells.append((r, c))
        if self.num_agents > len(self.spawn_points):
            raise ValueError("more agents than spawn points")

        self.palette = tiles.make_palette(self.num_agents)
        self.rng = np.array([rng_state], dtype=np.uint64)

        # --- mutable state
        self.grid = self.initial_grid.copy()
        self.positions = [(0, 0)] * self.num_agents
        self.orientations = [UP] * self.num_agents
        self.beams = {}  # (row, col) -> tiles.BEAM_FIRE / tiles.BEAM_CLEAN, this step only
        self.hits = np.zeros((num_agents, num_agents), np.int32)  # this step's FIRE hits [shooter, target]
        self.step_count = 0
        self.prev_actions = [STAY] * self.num_agents
        self.returns = [np.float32(0.0)] * self.num_agents
        # info buffers that persist between steps, as the batched env's do
        self.final_obs = np.zeros((self.num_agents, VIEW_SIZE, VIEW_SIZE, 3), np.uint8)
        self.episode_returns = np.zeros(self.num_agents, np.float32)
        # counts of the situations met, so tests can check what they covered
        self.events = collections.Counter()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_batched(cls, env, b: int, info: dict | None = None) -> ReferenceEnv:
        """A reference copy of env ``b`` of a :class:`BatchedEnv` (its state right now).

        ``info`` (the batched env's last info dict), when given, also copies the persistent
        ``final_obs`` / ``episode_returns`` buffers.
        """
        ref = cls(env.name, env.num_agents, env.layout.text, env.params, 0)
        state = env.get_state()
        ref.grid = state["grid"][b].copy()
        ref.positions = [(int(r), int(c)) for r, c in state["positions"][b]]
        ref.orientations = [int(o) for o in state["orientations"][b]]
        ref.beams = {}
        for r in range(ref.height):
            for c in range(ref.width):
                if state["beams"][b, r, c] != tiles.NO_BEAM:
                    ref.beams[(r, c)] = int(state["beams"][b, r, c])
        ref.step_count = int(state["step_count"][b])
        ref.prev_actions = [int(a) for a in state["prev_actions"][b]]
        ref.returns = [np.float32(x) for x in state["returns"][b]]
        ref.rng[0] = state["rng"][b]
        if info is not None:
            ref.final_obs = np.array(info["final_obs"][b], np.uint8)
            ref.episode_returns = np.array(info["episode_returns"][b], np.float32)
        return ref

    def state(self) -> dict:
        """The same keys and dtypes as ``BatchedEnv.get_state()``, without the batch axis."""
        beams = np.zeros((self.height, self.width), np.uint8)
        for (r, c), kind in self.beams.items():
            beams[r, c] = kind
        return {
            "grid": self.grid.copy(),
            "positions": np.array(self.positions, np.int32).reshape(self.num_agents, 2),
            "orientations": np.array(self.orientations, np.int8),
            "beams": beams,
            "step_count": np.array(self.step_count, np.int32),
            "prev_actions": np.array(self.prev_actions, np.int32),
            "returns": np.array(self.returns, np.float32),
            "rng": np.array(self.rng[0], np.uint64),
        }

    # ------------------------------------------------------------------ random draws
    def uniform(self) -> float:
        return float(_rng_uniform(self.rng, 0))

    def randint(self, n: int) -> int:
        return int(_rng_randint(self.rng, 0, n))

    # ------------------------------------------------------------------ helpers
    def inside(self, cell) -> bool:
        r, c = cell
        return 0 <= r < self.height and 0 <= c < self.width

    def is_wall(self, cell) -> bool:
        """Walls, and everything outside the map, block moves and beams."""
        return not self.inside(cell) or self.grid[cell] == tiles.WALL

    def agent_at(self, cell):
        for k, pos in enumerate(self.positions):
            if pos == cell:
                return k
        return None

    @staticmethod
    def shifted(cell, orientation, distance=1):
        dr, dc = FORWARD_STEP[orientation]
        return (cell[0] + distance * dr, cell[1] + distance * dc)

    # ------------------------------------------------------------------ reset
    def _reset_state(self) -> None:
        self.grid = self.initial_grid.copy()
        self.beams = {}
        self.step_count = 0
        # spawn points: partial Fisher-Yates over the spawn list
        perm = list(range(len(self.spawn_points)))
        positions = []
        for k in range(self.num_agents):
            j = k + self.randint(len(perm) - k)
            perm[k], perm[j] = perm[j], perm[k]
            positions.append(self.spawn_points[perm[k]])
        self.positions = positions
        # then a uniformly random orientation for each agent
        self.orientations = [self.randint(4) for _ in range(self.num_agents)]
        self.prev_actions = [STAY] * self.num_agents
        self.returns = [np.float32(0.0)] * self.num_agents
        # then one respawn pass
        self._respawn()

    def reset(self):
        """Start a new episode. Returns ``obs`` [N,15,15,3] and the info dict."""
        self._reset_state()
        self.hits[:] = 0
        obs = self.observe()
        return obs, self._info(self.visibility())

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Advance one step. Returns (obs, rewards, truncated, info), autoresetting at the horizon."""
        actions = [int(a) for a in actions]
        assert len(actions) == self.num_agents
        assert all(0 <= a < self.num_actions for a in actions)
        rewards = [np.float32(0.0)] * self.num_agents
        self.beams = {}
        self.hits[:] = 0
        self.step_count += 1

        self._turn_and_move(actions)
        self._eat(rewards)
        self._fire_beams(actions, rewards)
        self._respawn()

        for k in range(self.num_agents):
            self.returns[k] = np.float32(self.returns[k] + rewards[k])
        self.prev_actions = list(actions)
        obs = self.observe()
        visible = self.visibility()

        truncated = self.step_count >= self.params.horizon
        if truncated:
            self.events["autoreset"] += 1
            self.final_obs = obs.copy()
            self.episode_returns = np.array(self.returns, np.float32)
            self._reset_state()
            obs = self.observe()
            visible = self.visibility()
        return obs, np.array(rewards, np.float32), truncated, self._info(visible)

    def _info(self, visible):
        return {
            "final_obs": self.final_obs.copy(),
            "episode_returns": self.episode_returns.copy(),
            "visible": visible,
            "prev_actions": np.array(self.prev_actions, np.int32),
            "hits": self.hits.copy(),
        }

    # --- 1. turns and moves
    def _turn_and_move(self, actions) -> None:
        n = self.num_agents
        start = list(self.positions)
        occupant = {start[k]: k for k in range(n)}

        # Turns change the orientation only; moves pick an egocentric target cell.
        target = {}  # agent -> target cell, for agents that try to move into a free-standing cell
        for k in range(n):
            a, o = actions[k], self.orientations[k]
            if a == TURN_CLOCKWISE:
                self.orientations[k] = right_of(o)
            elif a == TURN_COUNTERCLOCKWISE:
                self.orientations[k] = left_of(o)
            elif a in MOVE_ACTIONS:
                direction = {MOVE_UP: o, MOVE_DOWN: behind(o),
                             MOVE_RIGHT: right_of(o), MOVE_LEFT: left_of(o)}[a]
                cell = self.shifted(start[k], direction)
                if self.is_wall(cell):
                    self.events["wall_bump"] += 1
                else:
                    target[k] = cell
        moving = set(target)

        # a. contests: cells in the order of their lowest-index contender; one random winner
        decided_cells = set()
        for k in range(n):
            if k not in moving or target[k] in decided_cells:
                continue
            cell = target[k]
            decided_cells.add(cell)
            contenders = [j for j in range(n) if j in moving and target[j] == cell]
            if len(contenders) > 1:
                self.events["contest"] += 1
                winner = contenders[self.randint(len(contenders))]
                for j in contenders:
                    if j != winner:
                        moving.discard(j)

        # b. swaps: two movers heading into each other's cells both stay
        swappers = set()
        for k in moving:
            for j in moving:
                if k < j and target[k] == start[j] and target[j] == start[k]:
                    swappers.update((k, j))
        if swappers:
            self.events["swap"] += len(swappers) // 2
        moving -= swappers

        # c. fixpoint: a move into a cell whose occupant does not move fails (cascades)
        changed = True
        while changed:
            changed = False
            for k in sorted(moving):
                j = occupant.get(target[k])
                if j is not None and j not in moving:
                    moving.discard(k)
                    changed = True
                    self.events["blocked"] += 1

        # remaining movers all move: chains and closed cycles rotate
        for k in moving:
            j = occupant.get(target[k])
            if j is not None:
                self.events["follow"] += 1  # entered a cell vacated this very step
                # closed cycle? follow the chain of occupants from k's target back to k
                seen, cur = set(), j
                while cur is not None and cur in moving and cur not in seen:
                    seen.add(cur)
                    cur = occupant.get(target[cur])
                    if cur == k:
                        self.events["cycle_member"] += 1
                        break
        for k in moving:
            self.positions[k] = target[k]
        self.events["moved"] += len(moving)
        assert len(set(self.positions)) == n, "two agents share a cell"

    # --- 2. eating
    def _eat(self, rewards) -> None:
        for k, cell in enumerate(self.positions):
            if self.grid[cell] == tiles.APPLE:
                self.grid[cell] = tiles.FLOOR
                rewards[k] = np.float32(rewards[k] + np.float32(self.params.apple_reward))
                self.events["eat"] += 1

    # --- 3. beams
    def _fire_beams(self, actions, rewards) -> None:
        shooters = [k for k in range(self.num_agents) if actions[k] in (FIRE, CLEAN)]
        for i in range(len(shooters) - 1, 0, -1):  # Fisher-Yates
            j = self.randint(i + 1)
            shooters[i], shooters[j] = shooters[j], shooters[i]
        length = self.params.beam_length
        for k in shooters:
            is_fire = actions[k] == FIRE
            if is_fire:
                rewards[k] = np.float32(rewards[k] - np.float32(self.params.fire_cost))
            o, pos = self.orientations[k], self.positions[k]
            # centre ray: forward distance 1..L from the agent
            self._ray(k, self.shifted(pos, o, 1), o, length, is_fire, rewards)
            # side rays: the cell directly left / right, then forward 0..L-1
            self._ray(k, self.shifted(pos, left_of(o)), o, length, is_fire, rewards)
            self._ray(k, self.shifted(pos, right_of(o)), o, length, is_fire, rewards)

    def _ray(self, shooter, first_cell, orientation, length, is_fire, rewards) -> None:
        """Cover ``length`` cells from ``first_cell`` going ``orientation``, stopping as the spec says."""
        for d in range(length):
            cell = self.shifted(first_cell, orientation, d)
            if self.is_wall(cell):
                return  # stops before a wall / the map edge (not covered)
            self.beams[cell] = tiles.BEAM_FIRE if is_fire else tiles.BEAM_CLEAN
            stop = False
            if not is_fire and self.grid[cell] == tiles.WASTE:
                self.grid[cell] = tiles.RIVER  # CLEAN turns the first waste into river
                self.events["cleaned"] += 1
                stop = True
            k = self.agent_at(cell)
            if k is not None and k != shooter:
                if is_fire:
                    rewards[k] = np.float32(rewards[k] - np.float32(self.params.hit_penalty))
                    self.events["hit"] += 1
                    self.hits[shooter, k] += 1
                else:
                    self.events["clean_stopped_by_agent"] += 1
                stop = True
            if stop:
                return

    # --- 4. respawn
    def _respawn(self) -> None:
        if self.game == "harvest":
            self._harvest_respawn()
        else:
            self._cleanup_respawn()

    def _harvest_respawn(self) -> None:
        p = self.params
        probs = [float(x) for x in p.regrowth_probs]
        neighbours = {"3x3": NEIGHBOURS_3X3, "radius2": NEIGHBOURS_RADIUS2}[p.regrowth_neighbourhood]
        occupied = set(self.positions)
        before = self.grid.copy()  # neighbour counts use the map before this pass's growth
        for cell in self.orchard_cells:
            if before[cell] == tiles.APPLE or cell in occupied:
                continue
            n = 0
            for dr, dc in neighbours:
                other = (cell[0] + dr, cell[1] + dc)
                if self.inside(other) and before[other] == tiles.APPLE:
                    n += 1
            prob = probs[min(n, 3)]
            if prob > 0.0 and self.uniform() < prob:
                self.grid[cell] = tiles.APPLE
                self.events["apple_grew"] += 1

    def _cleanup_respawn(self) -> None:
        p = self.params
        waste = sum(1 for cell in self.river_cells if self.grid[cell] == tiles.WASTE)
        total = len(self.river_cells)
        density = waste / total if total > 0 else 0.0
        if density >= p.depletion_threshold:
            self.events["depleted"] += 1
            return  # nothing spawns
        if density <= p.restoration_threshold:
            apple_prob = p.apple_respawn_prob
            self.events["restored"] += 1
        else:
            # linear from apple_respawn_prob at the restoration threshold to 0 at depletion
            fraction = (density - p.restoration_threshold) / (p.depletion_threshold - p.restoration_threshold)
            apple_prob = p.apple_respawn_prob * (1.0 - fraction)
            self.events["partial_density"] += 1
        occupied = set(self.positions)
        if apple_prob > 0.0:
            for cell in self.orchard_cells:
                if self.grid[cell] != tiles.APPLE and cell not in occupied:
                    if self.uniform() < apple_prob:
                        self.grid[cell] = tiles.APPLE
                        self.events["apple_grew"] += 1
        clean_cells = [cell for cell in self.river_cells if self.grid[cell] != tiles.WASTE]
        if not clean_cells or p.waste_spawn_prob <= 0.0:
            return
        if p.waste_spawn_mode == "shuffle":
            # some cell of the shuffled walk passes its coin flip; uniform among them
            p_any = 1.0 - (1.0 - p.waste_spawn_prob) ** len(clean_cells)
        elif p.waste_spawn_mode == "single":
            p_any = p.waste_spawn_prob
        else:
            raise ValueError(p.waste_spawn_mode)
        if self.uniform() < p_any:
            cell = clean_cells[self.randint(len(clean_cells))]
            self.grid[cell] = tiles.WASTE
            self.events["waste_spawned"] += 1
            if cell in occupied:
                self.events["waste_under_agent"] += 1

    # ------------------------------------------------------------------ observations
    def cell_colour(self, cell):
        """RGB of one map cell as the agents see it (outside the map: black)."""
        if not self.inside(cell):
            return (0, 0, 0)
        k = self.agent_at(cell)
        if k is not None:
            code = tiles.AGENT_BASE + k  # agents on top
        elif self.params.draw_beams and cell in self.beams:
            code = tiles.FIRE_BEAM if self.beams[cell] == tiles.BEAM_FIRE else tiles.CLEAN_BEAM
        else:
            code = int(self.grid[cell])
        return tuple(int(x) for x in self.palette[code])

    def observe(self) -> np.ndarray:
        """[N, 15, 15, 3] uint8: obs[k, r, c] shows the cell (7 - r) ahead, (c - 7) to the right."""
        n = self.num_agents
        colours = {}  # cache of cell -> colour for this call
        obs = np.zeros((n, VIEW_SIZE, VIEW_SIZE, 3), np.uint8)
        for k in range(n):
            o = self.orientations[k]
            row0, col0 = self.positions[k]
            for r in range(VIEW_SIZE):
                for c in range(VIEW_SIZE):
                    ahead = VIEW_RADIUS - r
                    to_right = c - VIEW_RADIUS
                    if self.params.view_flip and o in (LEFT, RIGHT):
                        # the reference's quirk: sideways-facing views rotated by 180 degrees
                        ahead, to_right = -ahead, -to_right
                    fr, fc = FORWARD_STEP[o]
                    rr, rc = FORWARD_STEP[right_of(o)]
                    cell = (row0 + ahead * fr + to_right * rr, col0 + ahead * fc + to_right * rc)
                    if cell not in colours:
                        colours[cell] = self.cell_colour(cell)
                    obs[k, r, c] = colours[cell]
        return obs

    def visibility(self) -> np.ndarray:
        """[N, N] bool: j visible to k when |drow| <= 7 and |dcol| <= 7."""
        n = self.num_agents
        visible = np.zeros((n, n), bool)
        for k in range(n):
            for j in range(n):
                dr = abs(self.positions[j][0] - self.positions[k][0])
                dc = abs(self.positions[j][1] - self.positions[k][1])
                visible[k, j] = dr <= VIEW_RADIUS and dc <= VIEW_RADIUS
        return visible
