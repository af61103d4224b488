"""The basic influence reward along a short Harvest run, beside the extrinsic reward.

    python experiments/influence_training.py --steps 3e5 [--divergence pmi] [--influencee-reward]
                                       [--block-scale 10] [--head-scale 1]

Trains the ``influence`` model with the paper's Harvest preset (PMI, 3 influencers, beta 0.224)
but beta at full weight from the first step (no curriculum: the question is the size of the
reward, not the schedule), one thread, seed 0. ``--block-scale`` multiplies the influencees'
initial input weights of the influencers' one-hot actions (default init: uniform
+-1/sqrt(128), the same as the FC features' rows); ``--head-scale`` sets the policy head's
init bound (default 0.01). Prints, per window of updates, the size of the influence each
influencer exerted (``|influence_agent_k|``, the update's mean influence per step, averaged over
k < 3 and the window's updates), beta times it, and the extrinsic reward per agent-step
(collective return / (5 agents x 1000 steps)). Writes ``experiments/results/influence-training-NAME.json``
and keeps the run in ``runs/influence-training-NAME``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch

from ssdinfluence import policies
from ssdinfluence.config import build_config, preset_values
from ssdinfluence.networks import AgentNetworks
from ssdinfluence.train import train


def scaled_networks(block_scale: float, head_scale: float):
    """An ``AgentNetworks`` whose initial action-block rows and policy head are rescaled."""

    class Scaled(AgentNetworks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with torch.no_grad():
                if self.extra_size:
                    self.lstm.weight_ih[:, self.lstm.weight_ih.shape[1] - self.extra_size:].mul_(block_scale)
                self.policy.weight.mul_(head_scale / 0.01)
                self.policy.bias.mul_(head_scale / 0.01)

    return Scaled


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=float, default=3e5)
    parser.add_argument("--divergence", default="pmi", choices=("kl", "jsd", "pmi"))
    parser.add_argument("--influencee-reward", action="store_true")
    parser.add_argument("--block-scale", type=float, default=1.0)
    parser.add_argument("--head-scale", type=float, default=0.01)
    parser.add_argument("--windows", type=int, default=6)
    args = parser.parse_args()
    name = (f"{args.divergence}{'-influencee' if args.influencee_reward else ''}"
            f"-block{args.block_scale:g}-head{args.head_scale:g}-{args.steps / 1e6:g}M")
    values = {**preset_values("paper", "harvest", "influence"), "env": "harvest", "model": "influence",
              "steps": int(args.steps), "seed": 0, "threads": 1, "out": f"runs/influence-training-{name}",
              "log_trajectories": "", "influence_ramp_steps": 0, "divergence": args.divergence,
              "influencee_reward": args.influencee_reward}
    config = build_config(values)
    policies.AgentNetworks = scaled_networks(args.block_scale, args.head_scale)
    try:
        train(config)
    finally:
        policies.AgentNetworks = AgentNetworks
    with open(Path(config.out) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    size = max(1, len(rows) // args.windows)
    table = []
    print(f"{'env steps':>10} {'|influence|':>12} {'beta*|c|':>10} {'extrinsic/agent-step':>21} {'entropy':>8}")
    for i in range(0, len(rows), size):
        window = rows[i:i + size]
        influence = sum(abs(float(r[f"influence_agent_{k}"])) for r in window for k in range(config.influencers))
        influence /= len(window) * config.influencers
        returns = [float(r["collective_return"]) for r in window if r["collective_return"] not in ("", "nan")]
        extrinsic = sum(returns) / len(returns) / (config.agents * 1000) if returns else math.nan
        entropy = sum(float(r["entropy"]) for r in window) / len(window)
        steps = int(window[-1]["env_steps"])
        table.append({"env_steps": steps, "influence": influence, "beta_influence": config.influence_weight * influence,
                      "extrinsic_per_agent_step": extrinsic, "entropy": entropy})
        print(f"{steps:10,d} {influence:12.3g} {config.influence_weight * influence:10.3g} {extrinsic:21.4f} "
              f"{entropy:8.3f}")
    out = Path(__file__).parent / "results" / f"influence-training-{name}.json"
    out.write_text(json.dumps({"args": vars(args), "config": config.to_dict(), "windows": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
