"""Env throughput: env steps/s and agent steps/s for both games, by batch size and thread count.

    python bench/env_speed.py                       # full table, JSON in bench/results/
    python bench/env_speed.py --batch 256 --threads 2 --seconds 1

Random actions are drawn once up front (a pool cycled through), so the figures are the env's
own cost: Python-side validation, the step kernel, and the observation writes. "Where the time
goes" splits one step of the largest batch into Python overhead (``env.step`` minus the bare
kernel call), rules (moves, beams, respawn) and views (the egocentric RGB windows), timing
the views alone with a kernel that only renders them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

import ssdinfluence
from ssdinfluence.envs import core


@njit(cache=True, parallel=True)
def _views_only(grid, positions, orientations, beams, view, palette, draw_beams, flip, obs, visible):
    for b in prange(grid.shape[0]):
        core._observe(b, grid, positions, orientations, beams, view, palette, draw_beams, flip, obs, visible)


def _time(fn, seconds):
    fn()  # warm
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def measure(name, batch, threads, agents, seconds):
    numba.set_num_threads(threads)
    env = ssdinfluence.make(name, num_envs=batch, num_agents=agents, seed=0)
    env.reset()
    pool = np.random.default_rng(0).integers(0, env.num_actions, (64, batch, agents)).astype(np.int32)
    i = [0]

    def step():
        env.step(pool[i[0] % 64])
        i[0] += 1

    per_step = _time(step, seconds)
    return {"env": name, "batch": batch, "threads": threads, "agents": agents,
            "env_steps_per_s": batch / per_step, "agent_steps_per_s": batch * agents / per_step,
            "us_per_step_call": per_step * 1e6}


def breakdown(name, batch, threads, agents, seconds):
    """Split one step into Python overhead, rules and views (seconds per call)."""
    numba.set_num_threads(threads)
    env = ssdinfluence.make(name, num_envs=batch, num_agents=agents, seed=0)
    env.reset()
    actions = np.random.default_rng(0).integers(0, env.num_actions, (batch, agents)).astype(np.int32)
    full = _time(lambda: env.step(actions), seconds)
    s, p = env._state, env.params
    env._load_actions(actions)
    bare = _time(env._run_step_kernel, seconds)  # the step without Python-side validation
    views = _time(lambda: _views_only(s["grid"], s["positions"], s["orientations"], s["beams"], env._view,
                                      env.palette, p.draw_beams, p.view_flip, env._obs, env._visible), seconds)
    return {"env": name, "batch": batch, "threads": threads, "python_overhead_us": (full - bare) * 1e6,
            "rules_us": (bare - views) * 1e6, "views_us": views * 1e6, "total_us": full * 1e6,
            "views_share": views / full, "obs_bytes_per_s": batch * agents * 15 * 15 * 3 / full}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="cleanup,harvest")
    parser.add_argument("--batch", default="1,16,256,1024")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "env_speed.json"))
    args = parser.parse_args()
    names = args.envs.split(",")
    batches = [int(b) for b in args.batch.split(",")]
    threads = [min(int(t), numba.config.NUMBA_NUM_THREADS) for t in args.threads.split(",")]

    for name in names:  # compile outside the timings
        ssdinfluence.make(name, num_agents=args.agents).warmup()
    rows = [measure(n, b, t, args.agents, args.seconds) for n in names for b in batches for t in threads]
    print(f"{'env':8} {'B':>5} {'thr':>3} {'env steps/s':>13} {'agent steps/s':>14} {'us/call':>9}")
    for r in rows:
        print(f"{r['env']:8} {r['batch']:5d} {r['threads']:3d} {r['env_steps_per_s']:13,.0f} "
              f"{r['agent_steps_per_s']:14,.0f} {r['us_per_step_call']:9.1f}")
    split = [breakdown(n, max(batches), max(threads), args.agents, args.seconds) for n in names]
    print(f"\nwhere the time goes (B={max(batches)}, {max(threads)} threads, per step call):")
    print(f"{'env':8} {'python us':>10} {'rules us':>9} {'views us':>9} {'views %':>8} {'obs GB/s':>9}")
    for r in split:
        print(f"{r['env']:8} {r['python_overhead_us']:10.1f} {r['rules_us']:9.1f} {r['views_us']:9.1f} "
              f"{100 * r['views_share']:7.0f}% {r['obs_bytes_per_s'] / 1e9:9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"version": ssdinfluence.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "machine": platform.processor() or platform.machine(), "cores": numba.config.NUMBA_NUM_THREADS}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "breakdown": split}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
