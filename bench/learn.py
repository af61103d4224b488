"""A learning check anyone can rerun: train, then summarise the collective-return curve.

    python bench/learn.py --env harvest --model baseline --steps 5e6 --seed 0

Trains with the package defaults (plus any ``--set key=value`` overrides, e.g.
``--set algo=a2c``) into ``runs/learn-ENV-MODEL-sSEED-STEPS`` and prints the collective return
(mean over the episodes finished in each window of updates) along the run, the peak, and the
final value (mean over the last 10% of updates). Writes ``bench/results/learn-ENV-MODEL-sSEED-STEPS.json``.
The reference's PPO on Harvest with 5 agents peaks near 600 after 3-4e6 steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from ssdinfluence.config import build_config
from ssdinfluence.train import train


def curve(metrics_path: Path, points: int = 20):
    with open(metrics_path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["collective_return"] not in ("", "nan")]
    steps = [int(r["env_steps"]) for r in rows]
    returns = [float(r["collective_return"]) for r in rows]
    window = max(1, len(rows) // points)
    smoothed = [(steps[min(i + window, len(rows)) - 1], sum(returns[i:i + window]) / len(returns[i:i + window]))
                for i in range(0, len(rows), window)]
    tail = returns[-max(1, len(returns) // 10):]
    return smoothed, max(v for _, v in smoothed), sum(tail) / len(tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="harvest")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--steps", type=float, default=5e6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="extra config key=value (JSON value)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="", help="suffix of the run's name, e.g. the --set values it tests")
    args = parser.parse_args()
    name = f"learn-{args.env}-{args.model}-s{args.seed}-{args.steps / 1e6:g}M"  # budgets never overwrite each other
    name += f"-{args.tag}" if args.tag else ""
    values = {"env": args.env, "model": args.model, "steps": int(args.steps), "seed": args.seed,
              "out": args.out or f"runs/{name}", "log_trajectories": "0", "log_every": 50}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    config = build_config(values)
    resume = (Path(config.out) / "checkpoint.pt").exists()

    latest = {"return": math.nan}

    def report(row):
        if not math.isnan(row["collective_return"]):
            latest["return"] = row["collective_return"]
        if row["update"] % 50 == 0:
            print(f"{row['env_steps']:>10,} steps  {row['sps']:7,.0f} steps/s  latest collective return "
                  f"{latest['return']:8.1f}", flush=True)

    train(config, resume=resume, on_update=report)
    points, peak, final = curve(Path(config.out) / "metrics.csv")
    print(f"\n{'env steps':>12} {'collective return':>18}")
    for steps, value in points:
        print(f"{steps:12,d} {value:18.1f}")
    print(f"peak {peak:.1f}, final (last 10% of updates) {final:.1f}")
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config.to_dict(), "curve": points, "peak": peak, "final": final}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
