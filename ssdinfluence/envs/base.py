"""The batched env: one class owns reset, autoreset, validation and state I/O for both games.

A game contributes only its map, action count, parameters and respawn rule (see
:mod:`.harvest`, :mod:`.cleanup`). All per-step work happens in :mod:`.core`'s kernels,
which write into buffers allocated here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .. import threads
from ..names import ENV_NAMES
from . import cleanup, core, harvest, maps, tiles
from .rng import seed_states

HORIZON_LIMIT = 2**31 - 1  # the kernels count an episode's steps in int32
SEED_LIMIT = 2**64  # seeds are 0 .. 2**64 - 1: each env's random stream starts from a uint64


@dataclass(frozen=True)
class EnvParams:
    """Static rule parameters (never change during a run). Defaults follow the spec.

    ``view_flip`` and ``draw_beams=False`` reproduce the reference's two observation quirks;
    ``compat="reference"`` in :func:`make` sets both.
    """

    horizon: int = 1000
    beam_length: int = 5
    apple_reward: float = 1.0
    fire_cost: float = 1.0
    hit_penalty: float = 50.0
    draw_beams: bool = True
    view_flip: bool = False
    # Harvest only
    regrowth_probs: tuple = harvest.DEFAULT_REGROWTH_PROBS
    regrowth_neighbourhood: str = "3x3"
    # Cleanup only
    apple_respawn_prob: float = 0.05
    waste_spawn_prob: float = 0.5
    depletion_threshold: float = 0.4
    restoration_threshold: float = 0.0
    waste_spawn_mode: str = "shuffle"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Game:
    name: str
    kernel_id: int
    num_actions: int
    default_map: str
    # EnvParams -> (params float64, offsets [*, 2] int64): the game's respawn rule for the kernels
    kernel_params: Callable[[EnvParams], tuple]
    rule_fields: tuple = field(default=())


_GAMES = {
    "harvest": _Game("harvest", core.HARVEST, harvest.NUM_ACTIONS, maps.HARVEST_MAP, harvest.kernel_params,
                     ("regrowth_probs", "regrowth_neighbourhood")),
    "cleanup": _Game("cleanup", core.CLEANUP, cleanup.NUM_ACTIONS, maps.CLEANUP_MAP, cleanup.kernel_params,
                     ("apple_respawn_prob", "waste_spawn_prob", "depletion_threshold",
                      "restoration_threshold", "waste_spawn_mode")),
}

# The compact map state of one step (``BatchedEnv.map_state``): enough to re-render the map;
# the trajectory logs store these per step.
MAP_FIELDS = ("grid", "positions", "orientations", "beams")

# State arrays: name -> (dtype, shape as a function of (B, N, H, W)).
_STATE_SPEC = {
    "grid": (np.uint8, lambda B, N, H, W: (B, H, W)),
    "positions": (np.int32, lambda B, N, H, W: (B, N, 2)),
    "orientations": (np.int8, lambda B, N, H, W: (B, N)),
    "beams": (np.uint8, lambda B, N, H, W: (B, H, W)),
    "step_count": (np.int32, lambda B, N, H, W: (B,)),
    "prev_actions": (np.int32, lambda B, N, H, W: (B, N)),
    "returns": (np.float32, lambda B, N, H, W: (B, N)),
    "rng": (np.uint64, lambda B, N, H, W: (B,)),
}


class BatchedEnv:
    """``num_envs`` independent copies of one game with ``num_agents`` agents, stepped together.

    Arrays returned by :meth:`reset` and :meth:`step` are this env's own buffers, overwritten
    by the next call: copy what you keep.

    Attributes:
        num_envs (B), num_agents (N), num_actions (A), observation_shape ``(15, 15, 3)``,
        horizon, params (:class:`EnvParams`), layout (:class:`~.maps.MapLayout`).
    """

    def __init__(self, name: str, num_envs: int = 1, num_agents: int = 5, seed: int = 0,
                 map: str | None = None, compat: str | None = None, **rule_params):
        if name not in _GAMES:
            raise ValueError(f"unknown env {name!r}; available: {', '.join(ENV_NAMES)}")
        self.game = _GAMES[name]
        self.name = name
        self.params = _make_params(self.game, compat, rule_params)
        self.layout = maps.parse_map(self.game.default_map if map is None else map)
        num_envs, num_agents = positive_int("num_envs", num_envs), positive_int("num_agents", num_agents)
        if num_agents > len(self.layout.spawn_points):
            raise ValueError(
                f"too many agents for the map: {num_agents} agents but only "
                f"{len(self.layout.spawn_points)} spawn points ('P')"
            )
        if num_agents > tiles.MAX_AGENTS:
            raise ValueError(f"at most {tiles.MAX_AGENTS} agents are supported, got {num_agents}")
        threads.require_memory(env_bytes(num_envs, num_agents, self.layout.shape),
                               f"num_envs x num_agents = {num_envs} x {num_agents}")
        self.num_envs, self.num_agents = num_envs, num_agents
        self.num_actions = self.game.num_actions
        self.observation_shape = (tiles.VIEW_SIZE, tiles.VIEW_SIZE, 3)
        self.horizon = self.params.horizon
        self.palette = tiles.make_palette(num_agents)

        game_params, offsets = self.game.kernel_params(self.params)

        B, N = num_envs, num_agents
        H, W = self.layout.shape
        self._state = {k: np.zeros(shape(B, N, H, W), dtype) for k, (dtype, shape) in _STATE_SPEC.items()}
        # Derived and scratch arrays (rebuilt from the state when needed).
        self._occupancy = np.full((B, H, W), -1, np.int16)
        self._target = np.zeros((B, N, 2), np.int64)
        self._moving = np.zeros((B, N), np.bool_)
        self._settled = np.zeros((B, N), np.bool_)
        self._order = np.zeros((B, N), np.int64)
        self._spawn_perm = np.zeros((B, len(self.layout.spawn_points)), np.int64)
        self._grow = np.zeros((B, max(len(self.layout.apple_cells), 1)), np.bool_)
        self._view = np.zeros((B, H + 2 * tiles.VIEW_RADIUS, W + 2 * tiles.VIEW_RADIUS), np.uint8)
        self._render_codes = np.zeros((H, W), np.uint8)
        # Outputs.
        self._actions = np.zeros((B, N), np.int32)
        self._obs = np.zeros((B, N) + self.observation_shape, np.uint8)
        self._final_obs = np.zeros_like(self._obs)
        self._rewards = np.zeros((B, N), np.float32)
        self._terminated = np.zeros(B, np.bool_)  # episodes never terminate, only truncate
        self._truncated = np.zeros(B, np.bool_)
        self._episode_returns = np.zeros((B, N), np.float32)
        self._visible = np.zeros((B, N, N), np.bool_)
        self._hits = np.zeros((B, N, N), np.int32)
        self._all_envs = np.ones(B, np.bool_)
        self._seed = _seed(seed)
        self._state["rng"][:] = seed_states(self._seed, B)
        self._needs_reset = True
        self._parts = {}  # (start, stop) -> the step kernel's arguments for those envs
        # The kernels' arguments, grouped as the tuples of ``core`` (views of the arrays above:
        # arrays are only ever written in place, so these stay valid).
        p, s, layout = self.params, self._state, self.layout
        self._world = (self.game.kernel_id, layout.initial_grid, layout.spawn_points, layout.apple_cells,
                       layout.waste_cells, offsets, game_params, self.palette, p.draw_beams, p.view_flip,
                       p.horizon, p.beam_length, np.float32(p.apple_reward), np.float32(p.fire_cost),
                       np.float32(p.hit_penalty))
        self._kernel_state = (s["grid"], s["positions"], s["orientations"], self._occupancy, s["beams"],
                              s["step_count"], s["prev_actions"], s["returns"], s["rng"])
        self._scratch = (self._target, self._moving, self._settled, self._order, self._spawn_perm, self._grow,
                         self._view)
        self._outputs = (self._obs, self._rewards, self._truncated, self._final_obs, self._episode_returns,
                         self._visible, self._hits)

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None):
        """Start a new episode in every env. ``seed`` reseeds all envs' random streams.

        Returns ``obs`` ([B, N, 15, 15, 3] uint8) and ``info`` (see :meth:`step`).
        """
        if seed is not None:
            self._seed = _seed(seed)
            self._state["rng"][:] = seed_states(self._seed, self.num_envs)
        core.reset_kernel(self._all_envs, self._world, self._kernel_state, self._scratch, self._outputs)
        self._truncated[:] = False
        self._rewards[:] = 0.0
        self._hits[:] = 0
        self._needs_reset = False
        return self._obs, self._info()

    def step(self, actions, envs: slice | None = None):
        """Advance every env one step, autoresetting those that reach the horizon.

        Args:
            actions: integer array [B, N], each in ``[0, num_actions)``.
            envs: a slice ``start:stop`` to step only those envs (``actions`` then
                ``[stop - start, N]``); the others and their rows of the outputs stay as they
                are. Each env has its own random stream, so stepping the envs in parts gives
                exactly what one call for all of them gives (a trainer steps one half of the
                batch while a GPU evaluates the policy on the other).

        Returns:
            obs [B, N, 15, 15, 3] uint8, rewards [B, N] float32, terminated [B] bool (always
            False), truncated [B] bool, info dict with ``prev_actions`` [B, N] int32 (the
            actions just taken; STAY after a reset), ``visible`` [B, N, N] bool, ``hits``
            [B, N, N] int32 (the step's fire-beam hits, [b, shooter, target]; 0 after a
            reset), and, valid
            where truncated, ``final_obs`` [B, N, 15, 15, 3] uint8 and ``episode_returns``
            [B, N] float32. Where truncated, ``obs`` is already the new episode's first view.
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        start, stop = (0, self.num_envs) if envs is None else self._part(envs)
        self._load_actions(actions, start, stop)
        self._run_step_kernel(start, stop)
        return self._obs, self._rewards, self._terminated, self._truncated, self._info()

    def _part(self, envs) -> tuple[int, int]:
        """``envs`` as ``(start, stop)``: a slice of consecutive envs, else ValueError."""
        if not isinstance(envs, slice) or envs.step not in (None, 1):
            raise ValueError(f"envs must be a slice start:stop of consecutive envs, got {envs!r}")
        start, stop, _ = envs.indices(self.num_envs)
        if start >= stop:
            raise ValueError(f"envs {envs!r} selects no env of {self.num_envs}")
        return start, stop

    def _run_step_kernel(self, start: int = 0, stop: int | None = None) -> None:
        """Step envs ``start:stop`` (all by default) with the actions already in ``self._actions``
        (validated). A part's arguments are views of the batch's arrays (the env axis leads
        every state, scratch and output array), built once per part."""
        stop = self.num_envs if stop is None else stop
        if (start, stop) == (0, self.num_envs):
            arguments = (self._actions, self._world, self._kernel_state, self._scratch, self._outputs)
        else:
            if (start, stop) not in self._parts:
                def rows(arrays):
                    return tuple(a[start:stop] for a in arrays)
                self._parts[start, stop] = (self._actions[start:stop], self._world, rows(self._kernel_state),
                                            rows(self._scratch), rows(self._outputs))
            arguments = self._parts[start, stop]
        with threads.for_envs(stop - start):
            core.step_kernel(*arguments)

    def get_state(self) -> dict:
        """A copy of the full mutable state: a dict of numpy arrays.

        ``grid`` [B, H, W] uint8 tile codes, ``positions`` [B, N, 2] int32 (row, col),
        ``orientations`` [B, N] int8, ``beams`` [B, H, W] uint8 (this step's beams),
        ``step_count`` [B] int32, ``prev_actions`` [B, N] int32, ``returns`` [B, N] float32
        (running episode returns), ``rng`` [B] uint64.
        """
        return {k: v.copy() for k, v in self._state.items()}

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state`; stepping from it is exactly reproducible.

        The whole state is checked before anything is written, so a bad state raises
        ``ValueError`` and leaves the env as it was.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict of arrays, got {type(state).__name__}")
        missing = sorted(set(_STATE_SPEC) - set(state))
        extra = sorted(set(state) - set(_STATE_SPEC))
        if missing or extra:
            raise ValueError(f"state keys do not match: missing {missing}, unexpected {extra}")
        B, N, (H, W) = self.num_envs, self.num_agents, self.layout.shape
        checked = {}
        for key, (dtype, shape) in _STATE_SPEC.items():
            value = np.asarray(state[key])
            if value.shape != shape(B, N, H, W):
                raise ValueError(f"state[{key!r}] has shape {value.shape}, expected {shape(B, N, H, W)}")
            if value.dtype != dtype:
                raise ValueError(f"state[{key!r}] has dtype {value.dtype}, expected {np.dtype(dtype)}")
            checked[key] = value
        _check_state_values(checked, self.layout, self.num_actions, self.horizon)
        for key, value in checked.items():
            self._state[key][...] = value
        core.rebuild_occupancy(self._state["positions"], self._occupancy)
        self._needs_reset = False

    def observe(self):
        """The current views and info, recomputed from the state (e.g. after :meth:`set_state`).

        Returns ``obs`` [B, N, 15, 15, 3] uint8 and ``info`` as :meth:`step` does.
        """
        s, p = self._state, self.params
        core.observe_kernel(s["grid"], s["positions"], s["orientations"], s["beams"], self._view,
                            self.palette, p.draw_beams, p.view_flip, self._obs, self._visible)
        return self._obs, self._info()

    def waste_fraction(self, out: np.ndarray | None = None) -> np.ndarray:
        """``[B] float64``: the fraction of each env's river cells that hold waste (Cleanup's
        pollution; apples stop growing at ``depletion_threshold``), written into ``out`` when
        given (no allocation: the trainer reads it every step). Empty for a map without a river
        (Harvest)."""
        cells = self.layout.waste_cells
        if not len(cells):
            return np.zeros(0)
        out = np.empty(self.num_envs) if out is None else out
        cleanup.waste_fractions(self._state["grid"], cells, out)
        return out

    def map_state(self, indices) -> dict:
        """Copies of the compact map state of the envs ``indices`` (list of E ints), for logging.

        ``grid`` [E, H, W] uint8, ``positions`` [E, N, 2] int32, ``orientations`` [E, N] int8,
        ``beams`` [E, H, W] uint8: enough to re-render the whole map (see :func:`render_frame`).
        """
        return {k: self._state[k][indices] for k in MAP_FIELDS}

    def render(self, index: int = 0, scale: int = 8) -> np.ndarray:
        """Whole map of env ``index`` as RGB, ``[H * scale, W * scale, 3] uint8``.

        Agents are drawn in their colours with a darker mark on the cell edge they face;
        this step's beams are drawn (always, whatever ``draw_beams`` says for observations).
        """
        if not 0 <= int(index) < self.num_envs:
            raise ValueError(f"index {index} out of range for {self.num_envs} envs")
        scale = positive_int("scale", scale)
        s = self._state
        core.render_codes(int(index), s["grid"], s["positions"], s["beams"], self._render_codes)
        return render_frame(self._render_codes, s["positions"][index], s["orientations"][index],
                            self.palette, scale)

    def warmup(self) -> None:
        """Compile the kernels now, on a one-env copy (this env's state is untouched).

        Compiled code is cached on disk, so only the first process pays the full cost.
        """
        copy = BatchedEnv(self.name, num_envs=1, num_agents=self.num_agents, seed=0,
                          map=self.layout.text, **self.rule_params())
        copy.reset()
        copy.step(np.full((1, self.num_agents), tiles.STAY, np.int32))

    def rule_params(self) -> dict:
        """The parameters that apply to this game, as keyword arguments for :func:`make`."""
        return {k: v for k, v in self.params.to_dict().items() if k not in _other_games_fields(self.game)}

    # ------------------------------------------------------------------ helpers
    def _info(self) -> dict:
        return {
            "prev_actions": self._state["prev_actions"],
            "visible": self._visible,
            "hits": self._hits,
            "final_obs": self._final_obs,
            "episode_returns": self._episode_returns,
        }

    def _load_actions(self, actions, start: int = 0, stop: int | None = None) -> None:
        """Check ``actions`` for envs ``start:stop`` (all by default) and copy them in."""
        actions = np.asarray(actions)
        stop = self.num_envs if stop is None else stop
        expected = (stop - start, self.num_agents)
        if actions.shape != expected:
            what = "num_envs" if expected[0] == self.num_envs else f"envs {start}:{stop}"
            raise ValueError(f"actions have shape {actions.shape}, expected {expected} ({what}, num_agents)")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        low, high = actions.min(), actions.max()
        if low < 0 or high >= self.num_actions:
            bad = low if low < 0 else high
            raise ValueError(
                f"action {bad} out of range: {self.name} has {self.num_actions} actions (0..{self.num_actions - 1})"
            )
        np.copyto(self._actions[start:stop], actions, casting="unsafe")

    def __repr__(self) -> str:
        return (f"BatchedEnv({self.name!r}, num_envs={self.num_envs}, num_agents={self.num_agents}, "
                f"map={self.layout.shape[0]}x{self.layout.shape[1]})")


def map_codes(grid: np.ndarray, positions: np.ndarray, beams: np.ndarray) -> np.ndarray:
    """Whole-map view codes of T stacked states, ``[T, H, W] uint8`` (a new array).

    The numpy twin of :func:`.core.render_codes` for logged states: tiles of ``grid``
    ([T, H, W] uint8), overwritten by the beams of ``beams`` ([T, H, W] uint8, 0 none, 1 fire,
    2 clean), then agent k (``positions`` [T, N, 2] integer (row, col)) as code ``AGENT_BASE + k``.
    """
    codes = np.array(grid, dtype=np.uint8)
    codes[beams == tiles.BEAM_FIRE] = tiles.FIRE_BEAM
    codes[beams == tiles.BEAM_CLEAN] = tiles.CLEAN_BEAM
    steps = np.arange(len(codes))[:, None]
    codes[steps, positions[..., 0], positions[..., 1]] = tiles.AGENT_BASE + np.arange(positions.shape[1])
    return codes


def render_frame(codes: np.ndarray, positions: np.ndarray, orientations: np.ndarray,
                 palette: np.ndarray, scale: int) -> np.ndarray:
    """RGB image of a code map ([H, W] uint8) with agents' facing marked, [H*s, W*s, 3] uint8."""
    frame = np.repeat(np.repeat(palette[codes], scale, axis=0), scale, axis=1)
    if scale >= 3:
        mark = max(1, scale // 4)
        for (row, col), o in zip(positions, orientations, strict=True):
            colour = palette[codes[row, col]] // 2
            r0, c0 = row * scale, col * scale
            if o == tiles.UP:
                frame[r0:r0 + mark, c0:c0 + scale] = colour
            elif o == tiles.DOWN:
                frame[r0 + scale - mark:r0 + scale, c0:c0 + scale] = colour
            elif o == tiles.LEFT:
                frame[r0:r0 + scale, c0:c0 + mark] = colour
            else:
                frame[r0:r0 + scale, c0 + scale - mark:c0 + scale] = colour
    return frame


def env_bytes(num_envs: int, num_agents: int, map_shape: tuple[int, int]) -> int:
    """Bytes a :class:`BatchedEnv` allocates: its state, views (obs and final_obs) and scratch."""
    H, W = map_shape
    view = tiles.VIEW_SIZE * tiles.VIEW_SIZE * 3
    padded = (H + 2 * tiles.VIEW_RADIUS) * (W + 2 * tiles.VIEW_RADIUS)
    per_env = 2 * num_agents * view + padded + 4 * H * W + num_agents * (8 * num_agents + 64)
    return num_envs * per_env


def _seed(value) -> int:
    """``value`` as an int seed in 0 .. 2**64 - 1 (numpy integers too, never a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (numpy integers too, never a bool), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _other_games_fields(game: _Game) -> set:
    return {f for g in _GAMES.values() if g is not game for f in g.rule_fields}


def _make_params(game: _Game, compat: str | None, rule_params: dict) -> EnvParams:
    known = set(EnvParams.__dataclass_fields__)
    unknown = sorted(set(rule_params) - known)
    if unknown:
        raise ValueError(f"unknown env parameter(s) {unknown}; known: {sorted(known)}")
    misplaced = sorted(set(rule_params) & _other_games_fields(game))
    if misplaced:
        raise ValueError(f"parameter(s) {misplaced} do not apply to {game.name}")
    if compat not in (None, "reference"):
        raise ValueError(f"unknown compat {compat!r}; use None or 'reference'")
    if compat == "reference":
        rule_params = {"view_flip": True, "draw_beams": False, **rule_params}
    for name, value in rule_params.items():
        _check_param_type(name, value, _PARAM_TYPES[name])
    params = EnvParams(**rule_params)
    if not 1 <= params.horizon <= HORIZON_LIMIT:
        raise ValueError(f"horizon must be in 1..{HORIZON_LIMIT}, got {params.horizon}")
    if params.beam_length < 1:
        raise ValueError(f"beam_length must be >= 1, got {params.beam_length}")
    return params


_PARAM_TYPES = {f.name: type(f.default) for f in fields(EnvParams)}


def _check_param_type(name: str, value, kind: type) -> None:
    """ValueError unless ``value`` is of the parameter's kind (numbers finite, bools real bools)."""
    def number(x):
        return not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, float, np.integer, np.floating)) \
            and math.isfinite(x)

    if kind is bool:
        ok, want = isinstance(value, (bool, np.bool_)), "true or false"
    elif kind is int:
        ok, want = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer)), "an integer"
    elif kind is float:
        ok, want = number(value), "a finite number"
    elif kind is str:
        ok, want = isinstance(value, str), "a string"
    else:  # tuple: regrowth_probs
        ok = isinstance(value, (list, tuple, np.ndarray)) and all(number(x) for x in np.ravel(np.asarray(value, object)))
        want = "a sequence of finite numbers"
    if not ok:
        raise ValueError(f"env parameter {name} must be {want}, got {value!r}")


def _check_state_values(state: dict, layout: maps.MapLayout, num_actions: int, horizon: int) -> None:
    H, W = layout.shape
    pos = state["positions"]
    if pos.size and (pos[..., 0].min() < 0 or pos[..., 0].max() >= H or pos[..., 1].min() < 0 or pos[..., 1].max() >= W):
        raise ValueError(f"state['positions'] has a position outside the {H}x{W} map")
    if np.any(state["grid"] > tiles.STREAM):
        raise ValueError(f"state['grid'] holds codes above {tiles.STREAM} (only tile codes 0..{tiles.STREAM} belong in the grid)")
    walls = layout.initial_grid == tiles.WALL
    if not np.array_equal(state["grid"] == tiles.WALL, np.broadcast_to(walls, state["grid"].shape)):
        raise ValueError("state['grid'] walls differ from the map's walls")
    B, N = pos.shape[:2]
    flat = pos[..., 0].astype(np.int64) * W + pos[..., 1]
    if N > 1 and np.any(np.diff(np.sort(flat, axis=1), axis=1) == 0):
        raise ValueError("state['positions'] puts two agents on one cell")
    if pos.size and np.any(walls[pos[..., 0], pos[..., 1]]):
        raise ValueError("state['positions'] puts an agent on a wall")
    if np.any((state["orientations"] < 0) | (state["orientations"] > 3)):
        raise ValueError("state['orientations'] must be in 0..3")
    if np.any((state["prev_actions"] < 0) | (state["prev_actions"] >= num_actions)):
        raise ValueError(f"state['prev_actions'] must be in 0..{num_actions - 1}")
    if np.any(state["beams"] > tiles.BEAM_CLEAN):
        raise ValueError("state['beams'] must be 0 (none), 1 (fire) or 2 (clean)")
    if np.any((state["step_count"] < 0) | (state["step_count"] >= horizon)):
        raise ValueError(f"state['step_count'] must be in 0..{horizon - 1}")
    if not np.all(np.isfinite(state["returns"])):
        raise ValueError("state['returns'] must be finite (running episode returns)")
