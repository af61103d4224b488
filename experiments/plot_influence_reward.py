"""The influence reward beside the extrinsic reward along training, from influence_training.py runs.

    python experiments/plot_influence_reward.py                      # every influence-training-*.json
    python experiments/plot_influence_reward.py FILE.json ... -o out.png

For each JSON written by ``experiments/influence_training.py`` draws, against env steps and on a log
scale, beta x |influence| (the influence reward an influencer gets per step) and |extrinsic
reward per agent-step|, so the gap between the two (three to four orders of magnitude in the
committed runs) is visible at a glance. Needs matplotlib (``pip install "ssdinfluence[viz]"``).
Writes ``experiments/results/influence-reward-vs-extrinsic.png`` by default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def label(args: dict) -> str:
    parts = [args["divergence"]]
    if args.get("influencee_reward"):
        parts.append("influencee reward")
    if args.get("block_scale", 1) != 1:
        parts.append(f"block x{args['block_scale']:g}")
    if args.get("head_scale", 0.01) != 0.01:
        parts.append(f"head {args['head_scale']:g}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS / "influence-reward-vs-extrinsic.png")
    args = parser.parse_args()
    files = args.files or sorted(RESULTS.glob("influence-training-*.json"))
    if not files:
        raise SystemExit(f"no influence-training-*.json in {RESULTS}: run experiments/influence_training.py first")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, path in enumerate(files):
        run = json.loads(path.read_text())
        steps = [w["env_steps"] / 1e6 for w in run["windows"]]
        colour = f"C{index}"
        ax.plot(steps, [abs(w["beta_influence"]) for w in run["windows"]], "-o", color=colour,
                label=f"beta x |influence| ({label(run['args'])})")
        ax.plot(steps, [abs(w["extrinsic_per_agent_step"]) for w in run["windows"]], "--", color=colour,
                label="|extrinsic| per agent-step (same run)")
    ax.set_yscale("log")
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("reward per agent-step")
    ax.set_title("Harvest, basic influence (beta 0.224, 3 influencers), seed 0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
