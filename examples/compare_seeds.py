"""Compare models across seeds: train each (model, seed), then one table and one plot.

    python examples/compare_seeds.py --models baseline,influence --seeds 3 --steps 2e5

For real comparisons run the trials as a sweep (``ssdinfluence sweep``, several at a time,
resumable); the analysis is the same from the command line:

    ssdinfluence compare runs/compare
    ssdinfluence plot runs/compare -o curves.png
"""

import argparse
from pathlib import Path

from ssdinfluence.analysis import compare_runs, find_runs, plot_curves
from ssdinfluence.config import build_config
from ssdinfluence.train import train

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="harvest", choices=["cleanup", "harvest"])
parser.add_argument("--models", default="baseline,influence")
parser.add_argument("--seeds", type=int, default=3)
parser.add_argument("--steps", type=float, default=2e5)
parser.add_argument("--root", default="runs/compare")
parser.add_argument("--num-envs", type=int, default=128, help="envs stepped together")
parser.add_argument("--horizon", type=int, default=1000, help="episode length")
args = parser.parse_args()

root = Path(args.root)
for model in args.models.split(","):
    for seed in range(args.seeds):
        out = root / f"{args.env}-{model}-s{seed}"
        if (out / "checkpoint.pt").exists():
            continue  # already trained (delete the directory to retrain)
        print(f"training {out}")
        train(build_config({"env": args.env, "model": model, "seed": seed, "steps": int(args.steps),
                            "num_envs": args.num_envs, "env_kwargs": {"horizon": args.horizon},
                            "out": str(out), "log_trajectories": ""}))

runs = find_runs([root])
for row in compare_runs(runs):
    ret = row["collective_return"]  # None where undefined (no episode finished; CI of one seed)
    mean = "n/a" if ret["mean"] is None else f"{ret['mean']:.1f}"
    ci = "" if ret["ci"] is None else f" ± {ret['ci']:.1f}"
    print(f"{row['env']:8s} {row['label']:12s} seeds {row['seeds']}: collective return {mean}{ci}"
          f"  (paper: {row['paper']})")
print("plot:", plot_curves(runs, root / "curves.png"))
