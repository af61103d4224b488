"""Exact parity between the batched Numba kernels and the slow reference in ``reference_env.py``.

Every test steps a :class:`BatchedEnv` and one :class:`ReferenceEnv` per env in lockstep
and, after reset and after every step, compares for every env: observations, rewards,
terminated/truncated, the info arrays (final_obs, episode_returns, visible, prev_actions)
and the full ``get_state()`` (grid, positions, orientations, beams, step_count,
prev_actions, returns, rng), bit for bit.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

import ssdinfluence
from ssdinfluence.envs import tiles
from ssdinfluence.envs.rng import seed_states

from .reference_env import ReferenceEnv

# ----------------------------------------------------------------------------- maps
# Harvest: one-wide corridors and a packed 2x2 room (contests, swaps, chains, blocked moves).
HARVEST_CORRIDORS = "\n".join([
    "@@@@@@@@@@@",
    "@PAPAPAPAP@",
    "@@@@@A@@PP@",
    "@PAPAPAPPP@",
    "@@@@@@@@@@@",
])
# Harvest with no walls at all: the map edge stops moves and beams and bounds the regrowth
# neighbourhood; views run off the map.
HARVEST_OPEN = "\n".join([
    "PA A P",
    " AAPA ",
    "PA  AP",
    "A PA A",
])
# Cleanup: 10 H/R cells next to the orchard, 4 of them waste at reset, so the density is
# exactly the 0.4 threshold (depleted); one cleaned cell takes it under, so apples and waste
# start spawning, and one spawned waste stops them again.
CLEANUP_SMALL = "\n".join([
    "@@@@@@@@@@@",
    "@HRHRPPBBB@",
    "@RHR P PBB@",
    "@HRRSPPBBB@",
    "@@@@@@@@@@@",
])
# Cleanup corridors between river and orchard.
CLEANUP_CORRIDORS = "\n".join([
    "@@@@@@@@@@@@",
    "@HHRRPPPPBB@",
    "@@@@P@@P@@B@",
    "@RRHHPPPPBB@",
    "@@@@@@@@@@@@",
])
# Cleanup with no walls: the edge matters for moves, beams and views.
CLEANUP_OPEN = "\n".join([
    "HRP BB",
    "RH PBB",
    " PSP B",
    "HR P B",
])

# ----------------------------------------------------------------------------- action mixes
# Relative weights for actions 0..8: MOVE_LEFT, MOVE_RIGHT, MOVE_UP, MOVE_DOWN, STAY,
# TURN_CW, TURN_CCW, FIRE, CLEAN (the last is dropped for Harvest).
MIXES = {
    "uniform": [1, 1, 1, 1, 1, 1, 1, 1, 1],
    "move": [5, 5, 5, 5, 1, 1, 1, 1, 1],
    "fire": [2, 2, 2, 2, 1, 3, 3, 8, 4],
    "clean": [1, 1, 1, 1, 1, 3, 3, 2, 8],
}


def action_sampler(env, mix, seed):
    weights = np.array(MIXES[mix][: env.num_actions], dtype=np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)

    def sample():
        return rng.choice(env.num_actions, size=(env.num_envs, env.num_agents), p=weights).astype(np.int32)

    return sample


# ----------------------------------------------------------------------------- comparison
STATE_KEYS = ("grid", "positions", "orientations", "beams", "step_count", "prev_actions", "returns", "rng")


def _diff(name, got, want, ctx):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{ctx}: {name} shape kernel {got.shape} vs reference {want.shape}"
    if got.dtype != want.dtype:
        return f"{ctx}: {name} dtype kernel {got.dtype} vs reference {want.dtype}"
    if not np.array_equal(got, want):
        where = np.argwhere(got != want)
        first = tuple(int(i) for i in where[0]) if len(where) else ()
        return (f"{ctx}: {name} differs at {len(where)} entries, first {first}: "
                f"kernel {got[first] if first else got} vs reference {want[first] if first else want}")
    return None


def check_env(env, refs, obs, info, ctx, rewards=None, terminated=None, truncated=None, ref_out=None):
    """Compare the kernel's outputs and state with the reference outputs ``ref_out[b]``."""
    state = env.get_state()
    errors = []
    for b, ref in enumerate(refs):
        r_obs, r_rewards, r_truncated, r_info = ref_out[b]
        c = f"{ctx} env {b} (step_count now {ref.step_count})"
        errors.append(_diff("obs", obs[b], r_obs, c))
        if rewards is not None:
            errors.append(_diff("rewards", rewards[b], r_rewards, c))
            errors.append(_diff("terminated", terminated[b], np.bool_(False), c))
            errors.append(_diff("truncated", truncated[b], np.bool_(r_truncated), c))
        for key in ("final_obs", "episode_returns", "visible", "prev_actions", "hits"):
            errors.append(_diff(f"info[{key}]", info[key][b], r_info[key], c))
        r_state = ref.state()
        for key in STATE_KEYS:
            errors.append(_diff(f"state[{key}]", state[key][b], r_state[key], c))
        errors = [e for e in errors if e]
        if errors:
            pytest.fail("kernel/reference mismatch:\n" + "\n".join(errors[:12]))


def reset_both(env, refs):
    obs, info = env.reset()
    out = []
    for ref in refs:
        r_obs, r_info = ref.reset()
        out.append((r_obs, None, None, r_info))
    check_env(env, refs, obs, info, "reset", ref_out=out)


def step_both(env, refs, actions, ctx):
    obs, rewards, terminated, truncated, info = env.step(actions)
    out = [ref.step(actions[b]) for b, ref in enumerate(refs)]
    check_env(env, refs, obs, info, ctx, rewards, terminated, truncated, out)
    return truncated


def fresh_refs(env, seed):
    """References with the same random streams as the kernel env's envs, before reset."""
    states = seed_states(seed, env.num_envs)
    refs = []
    for b in range(env.num_envs):
        ref = ReferenceEnv(env.name, env.num_agents, env.layout.text, env.params, int(states[b]))
        assert ref.spawn_points == [tuple(p) for p in env.layout.spawn_points.tolist()]
        refs.append(ref)
    return refs


def rollout(env, refs, mix, steps, seed, ctx):
    sample = action_sampler(env, mix, seed)
    for t in range(steps):
        step_both(env, refs, sample(), f"{ctx} step {t + 1}")


def events(refs):
    total = collections.Counter()
    for ref in refs:
        total.update(ref.events)
    return total


# ----------------------------------------------------------------------------- random rollouts
# (id, game, map, num_agents, num_envs, params, mix, steps, seed, events that must occur)
CASES = [
    ("harvest-corridors-move", "harvest", HARVEST_CORRIDORS, 8, 4, {}, "move", 70, 1,
     {"contest", "swap", "blocked", "follow", "eat", "autoreset", "wall_bump"}),
    ("harvest-corridors-fire-ref", "harvest", HARVEST_CORRIDORS, 6, 3,
     {"compat": "reference", "regrowth_probs": (0.0, 0.3, 0.6, 0.9)}, "fire", 65, 2,
     {"hit", "apple_grew", "eat", "autoreset"}),
    ("harvest-open-radius2", "harvest", HARVEST_OPEN, 5, 4,
     {"regrowth_neighbourhood": "radius2", "regrowth_probs": (0.1, 0.4, 0.7, 1.0)}, "uniform", 65, 3,
     {"apple_grew", "eat", "hit", "contest", "wall_bump", "autoreset"}),
    ("harvest-open-flip-beams", "harvest", HARVEST_OPEN, 4, 3,
     {"view_flip": True, "beam_length": 3, "apple_reward": 2.5, "fire_cost": 0.5, "hit_penalty": 7.25,
      "regrowth_probs": (0.0, 0.5, 0.5, 0.5)}, "fire", 65, 4,
     {"hit", "apple_grew", "autoreset"}),
    ("harvest-default", "harvest", None, 5, 3, {}, "uniform", 62, 5, {"eat", "hit", "autoreset"}),
    ("harvest-default-ref-r2", "harvest", None, 7, 3,
     {"compat": "reference", "regrowth_neighbourhood": "radius2", "regrowth_probs": (0.0, 0.2, 0.5, 0.8)},
     "move", 62, 6, {"eat", "apple_grew", "autoreset"}),
    ("cleanup-small-clean", "cleanup", CLEANUP_SMALL, 5, 4, {}, "clean", 70, 7,
     {"cleaned", "depleted", "partial_density", "waste_spawned", "autoreset"}),
    ("cleanup-small-apples", "cleanup", CLEANUP_SMALL, 6, 4, {"apple_respawn_prob": 1.0}, "clean", 65, 8,
     {"cleaned", "apple_grew", "eat", "waste_spawned", "depleted", "partial_density"}),
    ("cleanup-small-single-ref", "cleanup", CLEANUP_SMALL, 4, 3,
     {"compat": "reference", "waste_spawn_mode": "single", "waste_spawn_prob": 0.3,
      "apple_respawn_prob": 0.7, "depletion_threshold": 0.6, "restoration_threshold": 0.25}, "clean", 65, 9,
     {"cleaned", "apple_grew", "waste_spawned", "partial_density", "restored", "hit"}),
    ("cleanup-corridors-move", "cleanup", CLEANUP_CORRIDORS, 8, 4, {"apple_respawn_prob": 1.0}, "move", 65, 10,
     {"contest", "swap", "blocked", "follow", "apple_grew", "eat"}),
    ("cleanup-corridors-fire", "cleanup", CLEANUP_CORRIDORS, 6, 3, {"apple_respawn_prob": 0.5}, "fire", 65, 11,
     {"hit", "cleaned", "apple_grew", "autoreset"}),
    ("cleanup-open", "cleanup", CLEANUP_OPEN, 5, 4,
     {"apple_respawn_prob": 0.8, "waste_spawn_prob": 0.9}, "uniform", 65, 12,
     {"cleaned", "apple_grew", "waste_spawned", "hit", "wall_bump"}),
    ("cleanup-open-flip-nobeams", "cleanup", CLEANUP_OPEN, 4, 3,
     {"view_flip": True, "draw_beams": False, "apple_respawn_prob": 1.0, "waste_spawn_mode": "single"},
     "clean", 65, 13, {"cleaned", "apple_grew", "waste_spawned"}),
    ("cleanup-default", "cleanup", None, 5, 3, {}, "clean", 62, 14, {"cleaned", "depleted", "autoreset"}),
    # more agents than the spec's nine colours; a single agent; a horizon of one step
    ("harvest-default-12-agents", "harvest", None, 12, 2, {}, "move", 35, 15, {"eat", "contest", "autoreset"}),
    ("cleanup-small-1-agent", "cleanup", CLEANUP_SMALL, 1, 4, {"apple_respawn_prob": 1.0}, "clean", 62, 16,
     {"cleaned", "apple_grew", "eat", "autoreset"}),
    ("harvest-open-horizon-1", "harvest", HARVEST_OPEN, 5, 3, {"horizon": 1}, "uniform", 10, 17, {"autoreset"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_random_rollout_parity(case):
    name, game, map_text, n, b, params, mix, steps, seed, expected = case
    kwargs = dict({"horizon": 30}, **params)
    if map_text is not None:
        kwargs["map"] = map_text
    env = ssdinfluence.make(game, num_envs=b, num_agents=n, seed=seed, **kwargs)
    refs = fresh_refs(env, seed)
    reset_both(env, refs)
    rollout(env, refs, mix, steps, seed + 1000, name)
    missing = expected - set(events(refs))
    assert not missing, f"{name}: the rollout never produced {sorted(missing)}; events {dict(events(refs))}"


def test_cleanup_default_map_low_waste_staggered():
    """Default Cleanup map with most waste removed (apples grow, waste spawns, density crosses 0.4)
    and staggered step counts, so envs autoreset at different steps; refs built by from_batched."""
    env = ssdinfluence.make("cleanup", num_envs=4, num_agents=5, seed=21, horizon=30)
    _, info = env.reset()
    state = env.get_state()
    H_cells = np.argwhere(state["grid"][0] == tiles.WASTE)
    for b in range(4):
        keep = 40 + 3 * b  # 40..49 waste cells of 119: around the 0.4 threshold (47.6)
        for r, c in H_cells[keep:]:
            state["grid"][b, r, c] = tiles.RIVER
        state["step_count"][b] = 7 * b
    env.set_state(state)
    refs = [ReferenceEnv.from_batched(env, b, info) for b in range(4)]
    sample = action_sampler(env, "clean", 22)
    truncated_at = []
    for t in range(45):
        truncated = step_both(env, refs, sample(), f"cleanup-default-low-waste step {t + 1}")
        truncated_at.append(truncated.copy())
    truncated_at = np.array(truncated_at)
    assert truncated_at.any(axis=0).all() and not truncated_at.all(axis=1).any()
    ev = events(refs)
    for key in ("apple_grew", "waste_spawned", "depleted", "partial_density", "cleaned"):
        assert ev[key] > 0, (key, dict(ev))


def test_from_batched_mid_rollout():
    """A reference rebuilt from the kernel's state mid-episode keeps matching it."""
    env = ssdinfluence.make("harvest", num_envs=3, num_agents=6, seed=31, map=HARVEST_CORRIDORS,
                            horizon=30, regrowth_probs=(0.0, 0.3, 0.6, 0.9))
    env.reset()
    sample = action_sampler(env, "fire", 32)
    for _ in range(17):
        _, _, _, _, info = env.step(sample())
    refs = [ReferenceEnv.from_batched(env, b, info) for b in range(3)]
    for t in range(25):
        step_both(env, refs, sample(), f"from_batched step {t + 1}")


# ----------------------------------------------------------------------------- scripted situations
ROOM_2X2 = "\n".join(["@@@@@@", "@PP  @", "@PP  @", "@@@@@@"])
CORRIDOR = "\n".join(["@@@@@@@", "@PPPPP@", "@@@@@@@"])
TWO_ROWS = "\n".join(["@@@@@@@", "@PPPPP@", "@PPPPP@", "@@@@@@@"])


def scripted(game, map_text, positions, orientations, actions, **params):
    """Put the agents where given, take one step in kernel and reference, return both."""
    n = len(positions)
    env = ssdinfluence.make(game, num_envs=1, num_agents=n, seed=0, map=map_text, **params)
    _, info = env.reset()
    state = env.get_state()
    state["positions"][0] = np.array(positions, np.int32)
    state["orientations"][0] = np.array(orientations, np.int8)
    env.set_state(state)
    refs = [ReferenceEnv.from_batched(env, 0, info)]
    step_both(env, refs, np.array([actions], np.int32), f"scripted {positions} {actions}")
    return env, refs[0]


def test_four_cycle_rotates():
    U = tiles.UP
    pos = [(1, 1), (1, 2), (2, 2), (2, 1)]
    # facing UP: MOVE_RIGHT, MOVE_DOWN, MOVE_LEFT, MOVE_UP walk the 2x2 block clockwise
    env, ref = scripted("harvest", ROOM_2X2, pos, [U] * 4, [1, 3, 0, 2])
    assert ref.positions == [(1, 2), (2, 2), (2, 1), (1, 1)]
    assert ref.events["cycle_member"] == 4


def test_swap_chain_and_blocked_contest():
    U, R, L = tiles.UP, tiles.RIGHT, tiles.LEFT
    # swap: agents 0 and 1 face each other and both step forward -> both stay
    env, ref = scripted("harvest", CORRIDOR, [(1, 1), (1, 2)], [R, L], [2, 2])
    assert ref.positions == [(1, 1), (1, 2)] and ref.events["swap"] == 1
    # chain: 0 -> 1's cell, 1 -> 2's cell, 2 -> a free cell: all move
    env, ref = scripted("harvest", CORRIDOR, [(1, 1), (1, 2), (1, 3)], [R, R, R], [2, 2, 2])
    assert ref.positions == [(1, 2), (1, 3), (1, 4)]
    # FIX 1: 0 (from the left) and 2 (from below) contest (1,2), whose occupant 1 is blocked
    # by 3 who stays: nobody moves, and no two agents share a cell.
    env, ref = scripted("harvest", TWO_ROWS, [(1, 1), (1, 2), (2, 2), (1, 3)], [R, R, U, R], [2, 2, 2, 4])
    assert ref.events["contest"] == 1
    assert ref.positions == [(1, 1), (1, 2), (2, 2), (1, 3)]


def test_beam_rules_scripted():
    U, D = tiles.UP, tiles.DOWN
    m = "\n".join(["@@@@@@@", "@P P P@", "@     @", "@HP P @", "@     @", "@P P P@", "@@@@@@@"])
    # two shooters at (5,1) and (5,3) facing UP; agent 2 at (3,2) is on both of their side rays
    env, ref = scripted("cleanup", m, [(5, 1), (5, 3), (3, 2)], [U, U, D], [7, 7, 4])
    beams = env.get_state()["beams"][0]
    assert ref.events["hit"] == 2
    assert list(ref.returns) == [-1.0, -1.0, -100.0]
    assert beams[3, 2] == tiles.BEAM_FIRE and beams[2, 2] == tiles.NO_BEAM  # stops at the agent
    assert beams[2, 1] == tiles.BEAM_FIRE and beams[1, 1] == tiles.BEAM_FIRE  # FIRE passes waste
    assert beams[5, 0] == tiles.NO_BEAM and beams[0, 1] == tiles.NO_BEAM  # walls are not covered
    # CLEAN: the waste under an agent is cleaned and the ray stops there
    env, ref = scripted("cleanup", m, [(5, 1), (3, 1)], [U, U], [8, 4])
    beams = env.get_state()["beams"][0]
    assert ref.events["cleaned"] == 1
    assert beams[3, 1] == tiles.BEAM_CLEAN and beams[2, 1] == tiles.NO_BEAM
