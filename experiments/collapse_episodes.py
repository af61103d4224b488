"""Who fires at whom, and how many apples are left: logged episodes around a collapse.

    python experiments/collapse_episodes.py runs/learn-harvest-baseline-s0-5M-control --episodes 46,48,52

For each logged episode of the run's trajectories.h5 it prints the env steps when it was
logged, the collective return, per agent the FIRE actions, the fines taken (rewards of -50 or
less: a hit costs 50) and the apples eaten (rewards of +1), the apples on the map at five times
of the episode, and, from metrics.csv, the hits per step that each agent landed on each other
agent in the update that logged it (``hits_k_on_j``). Writes the same as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ssdinfluence.envs.tiles import APPLE, FIRE
from ssdinfluence.trajectories import TrajectoryReader


def episode_summary(reader: TrajectoryReader, k: int, metrics: dict) -> dict:
    index = reader.episodes()
    episode = reader.episode(k)
    actions, rewards, grid = episode["actions"], episode["rewards"], episode["grid"]  # [T, N], [T, N], [T, H, W]
    T, N = actions.shape
    times = sorted({0, T // 4, T // 2, 3 * T // 4, T - 1})
    update = int(index["update"][k])
    row = metrics.get(update + 1, {})  # the episode ran in the rollout of update `update` (0-based count before it)
    hits = [[float(row.get(f"hits_{i}_on_{j}", "nan") or "nan") if i != j else 0.0 for j in range(N)]
            for i in range(N)]
    return {"episode": k, "env_index": int(index["env_index"][k]), "env_steps": int(index["env_steps"][k]),
            "update": update, "collective_return": float(rewards.sum()),
            "fires": (actions == FIRE).sum(0).tolist(), "fines": (rewards <= -50).sum(0).tolist(),
            "apples_eaten": np.isclose(rewards, 1.0).sum(0).tolist(),
            "apples_on_map": {int(t): int((grid[t] == APPLE).sum()) for t in times}, "hits_per_step": hits}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", required=True, help="Comma-separated episode indices of the log.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the summaries to this file.")
    args = parser.parse_args()
    with open(args.run_dir / "metrics.csv", newline="") as handle:
        metrics = {int(r["update"]): r for r in csv.DictReader(handle)}
    with TrajectoryReader(args.run_dir / "trajectories.h5") as reader:
        summaries = [episode_summary(reader, int(k), metrics) for k in args.episodes.split(",")]
    for s in summaries:
        print(f"episode {s['episode']} (env {s['env_index']}, logged at {s['env_steps']:,} env steps): "
              f"collective return {s['collective_return']:.0f}")
        print(f"  {'agent':>5} {'fires':>6} {'fines':>6} {'apples':>7}   hits per step on agents 0..N-1")
        for a in range(len(s["fires"])):
            hits = " ".join(f"{h:.4f}" for h in s["hits_per_step"][a])
            print(f"  {a:>5} {s['fires'][a]:>6} {s['fines'][a]:>6} {s['apples_eaten'][a]:>7}   {hits}")
        print("  apples on the map at step " + ", ".join(f"{t}: {n}" for t, n in s["apples_on_map"].items()))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
