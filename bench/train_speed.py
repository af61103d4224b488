"""End-to-end training throughput: env steps/s per model and algorithm, and where the time goes.

    python bench/train_speed.py                              # every model, PPO
    python bench/train_speed.py --models baseline --against main --repeats 3   # vs another revision
    python bench/train_speed.py --models baseline,visible --algos ppo,a2c
    python bench/train_speed.py --models baseline --num-envs 256,1024 --updates 3 --device cuda
    python bench/train_speed.py --models baseline --num-envs 1024 --double-buffer off,on --device cuda

Each row trains from scratch for ``--updates`` updates (after one warm-up update that is not
counted) with 5 agents on Cleanup, and reports env steps/s over the counted updates, split
into env stepping, the rollout's forward passes, the update (forward + backward + optimiser)
and logging, from the trainer's own timers. Every measurement runs in a fresh child process.

``--against REV`` also measures git revision REV (exported to a temporary directory), in the
same run, the two trees taking turns measurement by measurement ``--repeats`` times (A B, then
B A, ...), and reports each tree's median and the median of the ratios of the measurements made
back to back, with their range: on a shared machine whose speed drifts from minute to minute
only such a ratio means anything.
Writes bench/results/train_speed.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision import exported  # noqa: E402

from ssdinfluence.config import Config  # noqa: E402  (the defaults; each measurement imports its own tree)

TIMERS = ("env", "forward", "backward", "logging")


def measure(env, model, algo, num_envs, rollout, updates, device, threads, double_buffer=False):
    """Train in this process and return the row (uses whichever ``ssdinfluence`` is importable).
    ``double_buffer`` is passed only when set, so that older revisions without it measure too."""
    from ssdinfluence.config import build_config
    from ssdinfluence.train import train

    rows = []
    with tempfile.TemporaryDirectory() as out:
        config = build_config({"env": env, "agents": 5, "model": model, "algo": algo, "num_envs": num_envs,
                               "rollout_length": rollout, "bptt_length": min(32, rollout),
                               "steps": num_envs * rollout * (updates + 1), "device": device, "threads": threads,
                               "out": out, "log_trajectories": "0", "checkpoint_every": 10_000,
                               **({"double_buffer": True} if double_buffer else {})})
        start = time.perf_counter()
        train(config, on_update=rows.append)
        wall = time.perf_counter() - start
    counted = rows[1:]  # the first update includes torch's own warm-up
    seconds = sum(r["env_s"] + r["forward_s"] + r["backward_s"] + r["logging_s"] for r in counted)
    steps = num_envs * rollout * len(counted)
    split = {name: sum(r[f"{name}_s"] for r in counted) / seconds for name in TIMERS}
    return {"env": env, "model": model, "algo": algo, "num_envs": num_envs, "rollout_length": rollout,
            "double_buffer": double_buffer, "device": device, "env_steps_per_s": steps / sum(num_envs * rollout / r["sps"] for r in counted),
            "share": split, "wall_s_with_setup": wall}


def run_child(tree: str, job: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"measurement {job} failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cleanup")
    parser.add_argument("--models", default="baseline,visible,influence,moa,moa-baseline,comm,comm-baseline")
    parser.add_argument("--algos", default="ppo")
    parser.add_argument("--num-envs", default=str(Config.num_envs), help="comma-separated batch sizes")
    parser.add_argument("--rollout", type=int, default=Config.rollout_length)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--double-buffer", default="off", help="comma-separated off,on: Config.double_buffer")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--against", help="also measure this git revision, alternating with the working tree")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per row and tree (median reported)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return

    buffering = {"off": False, "on": True}
    if not set(args.double_buffer.split(",")) <= set(buffering):
        parser.error(f"--double-buffer takes off, on or off,on; got {args.double_buffer!r}")
    jobs = [{"env": args.env, "model": m, "algo": a, "num_envs": int(b), "rollout": args.rollout,
             "updates": args.updates, "device": args.device, "threads": args.threads, "double_buffer": buffering[d]}
            for m in args.models.split(",") for a in args.algos.split(",") for b in args.num_envs.split(",")
            for d in args.double_buffer.split(",")]
    load_before = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        trees = {"this": str(Path(__file__).resolve().parent.parent)}
        if args.against:
            trees[args.against] = str(stack.enter_context(exported(args.against)))
        for tree in trees.values():  # compile (a fresh export) or load the env kernels, untimed
            run_child(tree, {**jobs[0], "updates": 1, "num_envs": 4, "rollout": 8})
        rows = []
        for job in jobs:
            runs = {name: [] for name in trees}
            order = list(trees.items())
            for repeat in range(args.repeats):  # the trees take turns: A B, then B A, ...
                for name, tree in order if repeat % 2 == 0 else order[::-1]:
                    runs[name].append(run_child(tree, job))
            speeds = [r["env_steps_per_s"] for r in runs["this"]]
            median = statistics.median(speeds)
            row = min(runs["this"], key=lambda r: abs(r["env_steps_per_s"] - median))  # its split of the time
            row = dict(row, env_steps_per_s=median, runs=speeds)  # the median, as the other tree's
            if args.against:
                other = [r["env_steps_per_s"] for r in runs[args.against]]
                pairs = [a / b for a, b in zip(speeds, other, strict=True)]  # measured back to back
                row.update(against=args.against, against_env_steps_per_s=statistics.median(other), against_runs=other,
                           ratio=statistics.median(pairs), pair_ratios=pairs)
            rows.append(row)
            write_results(out, args, rows, load_before, complete=len(rows) == len(jobs))  # a cut-off run keeps its rows

    header = f"{'model':13} {'algo':4} {'B':>5} {'T':>4} {'2buf':>4} {'env steps/s':>12}  " + "  ".join(f"{t:>8}" for t in TIMERS)
    if args.against:
        header += f"  {args.against[:12]:>12} {'ratio':>6} {'pairs from-to':>13}"
    print(f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; median of {args.repeats}")
    print(header)
    for r in rows:
        line = (f"{r['model']:13} {r['algo']:4} {r['num_envs']:5d} {r['rollout_length']:4d} "
                f"{'on' if r['double_buffer'] else 'off':>4} {r['env_steps_per_s']:12,.0f}  "
                + "  ".join(f"{100 * r['share'][t]:7.1f}%" for t in TIMERS))
        if args.against:
            line += (f"  {r['against_env_steps_per_s']:12,.0f} {r['ratio']:6.2f} "
                     f"{min(r['pair_ratios']):6.2f}-{max(r['pair_ratios']):.2f}")
        print(line)
    print(f"\nwrote {out}")


def write_results(out: Path, args, rows: list, load_before, complete: bool) -> None:
    import torch

    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    meta = {"torch": str(torch.__version__), "device": device, "cores": len(os.sched_getaffinity(0)),
            "threads": args.threads, "machine": platform.processor() or platform.machine(),
            "load_average_before": load_before, "load_average_after": os.getloadavg(), "repeats": args.repeats,
            "complete": complete}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
