"""The flat vector view (``ssdinfluence.make_vec``) against the raw batched kernel, in one run.

    python bench/vec_speed.py                      # both games, B in 1, 16, 64, 256; JSON in bench/results/
    python bench/vec_speed.py --batch 64 --seconds 1

Both sides step the same game with the same pre-drawn random actions (5 agents, all threads):
"raw" calls ``BatchedEnv.step`` with ``[B, N]`` actions, "view" calls ``AgentVectorEnv.step``
with ``[B * N]`` actions (reshape, per-agent done flags, the final-observation info at episode
ends). The two are timed in alternating rounds and each side's median round is kept, so load
from other processes hits both alike. The goal: the view at >= 90% of the raw env steps/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numba
import numpy as np

import ssdinfluence


def _rate(step, actions, seconds: float) -> float:
    """Env steps (calls) per second of ``step`` cycling through ``actions``."""
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(actions[calls % len(actions)])
        calls += 1
    return calls / (time.perf_counter() - start)


def measure(name: str, batch: int, agents: int, seconds: float, rounds: int) -> dict:
    raw = ssdinfluence.make(name, num_envs=batch, num_agents=agents, seed=0)
    view = ssdinfluence.make_vec(name, num_envs=batch, num_agents=agents, seed=0)
    raw.reset()
    view.reset()
    pool = np.random.default_rng(0).integers(0, raw.num_actions, (64, batch, agents)).astype(np.int32)
    flat = pool.reshape(64, batch * agents)
    _rate(raw.step, pool, 0.2)  # warm both
    _rate(view.step, flat, 0.2)
    raw_rates, view_rates = [], []
    for _ in range(rounds):
        raw_rates.append(_rate(raw.step, pool, seconds) * batch)
        view_rates.append(_rate(view.step, flat, seconds) * batch)
    raw_sps, view_sps = statistics.median(raw_rates), statistics.median(view_rates)
    return {"env": name, "batch": batch, "agents": agents, "raw_env_steps_per_s": round(raw_sps),
            "view_env_steps_per_s": round(view_sps), "view_over_raw": round(view_sps / raw_sps, 3),
            "raw_rounds": [round(r) for r in raw_rates], "view_rounds": [round(r) for r in view_rates]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="cleanup,harvest")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 16, 64, 256])
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="Length of one timed round per side.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vec_speed.json"))
    args = parser.parse_args()

    ssdinfluence.make("cleanup").warmup()
    ssdinfluence.make("harvest").warmup()
    rows = [measure(name, batch, args.agents, args.seconds, args.rounds)
            for name in args.envs.split(",") for batch in args.batch]
    print(f"{'env':8} {'B':>5} {'raw env steps/s':>16} {'view env steps/s':>17} {'view/raw':>9}")
    for r in rows:
        print(f"{r['env']:8} {r['batch']:>5} {r['raw_env_steps_per_s']:>16,} {r['view_env_steps_per_s']:>17,} "
              f"{r['view_over_raw']:>9.1%}")
    meta = {"threads": numba.get_num_threads(), "seconds_per_round": args.seconds, "rounds": args.rounds,
            "machine": platform.processor() or platform.machine(), "numpy": np.__version__}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
