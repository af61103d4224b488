"""Learning curves of runs that differ in one trainer setting, one line per run (not per model).

    python experiments/plot_collapse.py -o experiments/results/collapse/fix-curves.png \\
        control=runs/learn-harvest-baseline-s0-5M-control \\
        target_kl=runs/learn-harvest-baseline-s0-5M-targetkl02

Top: the collective return (trailing mean over ``--smooth`` updates of the episodes each update
finished); bottom: the highest fire rate of any agent in each update, on a log scale. A run's
label is the text before ``=``; runs whose labels share a prefix before ``/`` (e.g.
``target_kl/s1``) share a colour. Needs matplotlib (``pip install "ssdinfluence[viz]"``).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def read_run(run_dir: Path, smooth: int):
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(r["env_steps"]) for r in rows]
    fire = [max(float(r[k]) for k in r if k.startswith("fire_rate_agent_")) for r in rows]
    returns, window = [], []
    for r in rows:  # trailing mean over the updates that finished episodes
        if r["collective_return"] not in ("", "nan"):
            window = (window + [float(r["collective_return"])])[-smooth:]
        returns.append(sum(window) / len(window) if window else math.nan)
    return steps, returns, fire


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--smooth", type=int, default=10)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(2, 1))
    colours, styles = {}, ["-", "--", ":", "-."]
    for item in args.runs:
        label, _, path = item.partition("=")
        group = label.split("/")[0]
        colour = colours.setdefault(group, f"C{len(colours)}")
        style = styles[sum(1 for other in args.runs[:args.runs.index(item)] if other.split("/")[0] == group)
                       % len(styles)]
        steps, returns, fire = read_run(Path(path), args.smooth)
        top.plot(steps, returns, style, color=colour, label=label, linewidth=1.2)
        bottom.plot(steps, [max(f, 1e-4) for f in fire], style, color=colour, linewidth=0.8)
    top.set_ylabel("collective return")
    top.set_ylim(bottom=-1000)
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("max fire rate")
    bottom.set_xlabel("env steps")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
