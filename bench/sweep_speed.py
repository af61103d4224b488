"""Sweep throughput on this machine: how to split the cores between trials.

    python bench/sweep_speed.py                       # 4 Cleanup baseline trials of 4e4 steps
    python bench/sweep_speed.py --trials 8 --steps 1e5 --model influence

Runs the same trials as a local sweep once per (workers, threads per trial) split of the
cores, e.g. 1 x 2 and 2 x 1 on 2 cores, and reports the sweep's total env steps/s (trial
steps / wall time, process start-up and JIT loading included, as a real sweep pays them).
Writes bench/results/sweep_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from ssdinfluence import __version__
from ssdinfluence.sweep import SweepSpec, run_sweep


def measure(workers: int, threads: int, trials: int, steps: int, env: str, model: str) -> dict:
    spec = SweepSpec.from_dict({"base": {"env": env, "model": model, "steps": steps, "log_trajectories": ""},
                                "seeds": trials})
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        records = run_sweep(Path(root) / "sweep", spec, workers=workers, threads_per_trial=threads)
        wall = time.perf_counter() - start
    if any(r["status"] != "finished" for r in records):
        raise RuntimeError(f"a trial did not finish: {[(r['id'], r['status'], r['error']) for r in records]}")
    done = sum(r["env_steps"] for r in records)
    return {"workers": workers, "threads_per_trial": threads, "trials": trials, "env_steps": done,
            "wall_s": round(wall, 2), "env_steps_per_s": round(done / wall)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cleanup")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=float, default=4e4, help="env steps per trial")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    splits = [(w, cores // w) for w in range(1, cores + 1) if cores % w == 0]
    rows = [measure(w, t, args.trials, int(args.steps), args.env, args.model) for w, t in splits]
    best = max(row["env_steps_per_s"] for row in rows)
    print(f"{args.trials} {args.env} {args.model} trials of {int(args.steps):,} env steps, {cores} cores")
    print(f"{'workers':>8} {'threads':>8} {'wall s':>8} {'env steps/s':>12} {'vs best':>8}")
    for row in rows:
        print(f"{row['workers']:>8} {row['threads_per_trial']:>8} {row['wall_s']:>8.1f} "
              f"{row['env_steps_per_s']:>12,} {row['env_steps_per_s'] / best:>8.2f}")
    out = Path(__file__).parent / "results" / "sweep_speed.json"
    out.write_text(json.dumps({"meta": {"version": __version__, "cores": cores, "machine": platform.machine(),
                                        "env": args.env, "model": args.model},
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
