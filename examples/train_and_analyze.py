"""Train a short social-influence run, then analyse it from its run directory.

    python examples/train_and_analyze.py --steps 2e5 --out runs/example-influence

The same from the command line:

    ssdinfluence run --env harvest --model influence --steps 2e5 --out runs/example-influence
    ssdinfluence analyze runs/example-influence
"""

import argparse
import json

from ssdinfluence.analysis import analyze_run
from ssdinfluence.config import build_config
from ssdinfluence.train import train

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="harvest", choices=["cleanup", "harvest"])
parser.add_argument("--model", default="influence")
parser.add_argument("--steps", type=float, default=2e5)
parser.add_argument("--out", default="runs/example-influence")
parser.add_argument("--num-envs", type=int, default=128, help="envs stepped together")
parser.add_argument("--horizon", type=int, default=1000, help="episode length")
args = parser.parse_args()

config = build_config({"env": args.env, "model": args.model, "steps": int(args.steps), "out": args.out,
                       "num_envs": args.num_envs, "env_kwargs": {"horizon": args.horizon},
                       "log_every": 5})  # log every 5th episode of env 0 (the default logged env)
result = train(config, on_update=lambda row: print(
    f"update {row['update']:4d}  {row['env_steps']:>9,} steps  collective return {row['collective_return']:8.1f}"))

summary = analyze_run(result.run_dir, last=5)  # final metrics and the last 5 logged episodes
print(json.dumps(summary["final"], indent=2))
log = summary["log"]
if log and log["influence"]:
    print("mean influence per agent:", [round(v, 4) for v in log["influence"]["mean_per_agent"]])
    print("share of influential moments:", [round(v, 2) for v in log["influence"]["moment_share"]])
    print("action/action coordination (max pair):", log["coordination"]["action_action"]["overall"])
