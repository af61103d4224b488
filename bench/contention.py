"""Throughput beside another busy process: how much of its quiet speed each workload keeps.

    python bench/contention.py                      # env B=1, env B=256, a short training run
    python bench/contention.py --against main       # the same for another revision, interleaved
    python bench/contention.py --set OMP_WAIT_POLICY=ACTIVE   # try a setting in every child

Every measurement runs in a fresh child process with the package's default thread settings
(threads are configured at start-up, so a setting can only be tried in a new process). Each
workload runs quiet, then beside one CPU-bound competitor (a Python busy loop) that this
script starts and stops itself; the competitor also stops on its own after ``--max-seconds``,
so nothing outlives the script. Rounds repeat quiet/loaded pairs and the table reports the
median throughput of each and their ratio (goal: loaded >= 50% of quiet, on 2 cores).
Writes bench/results/contention.json.

Other processes on the machine count as load too: ``uptime``'s load average is printed and
stored with the results.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision import exported  # noqa: E402

WORKLOADS = ("env-b1", "env-b256", "train")
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def worker(kind: str, seconds: float) -> dict:
    """Run one workload in this process and return its throughput (env steps/s)."""
    import numpy as np

    import ssdinfluence

    if kind.startswith("env-b"):
        batch = int(kind[5:])
        env = ssdinfluence.make("cleanup", num_envs=batch, num_agents=5, seed=0)
        env.reset()
        pool = np.random.default_rng(0).integers(0, env.num_actions, (64, batch, 5)).astype(np.int32)
        for i in range(64):  # compile (or load from the cache) and warm up
            env.step(pool[i])
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(pool[steps % 64])
            steps += 1
        return {"env_steps_per_s": steps * batch / (time.perf_counter() - start)}
    if kind == "train":
        from ssdinfluence.config import build_config
        from ssdinfluence.train import train

        rows = []
        with tempfile.TemporaryDirectory() as out:
            from ssdinfluence.config import Config

            # the defaults' batch, 4 updates of which the first (warm-up) is not counted
            num_envs, rollout, updates = Config.num_envs, Config.rollout_length, 4
            config = build_config({"env": "cleanup", "agents": 5, "model": "baseline", "num_envs": num_envs,
                                   "rollout_length": rollout, "steps": num_envs * rollout * updates, "out": out,
                                   "log_trajectories": "", "checkpoint_every": 10_000})
            train(config, on_update=rows.append)
        counted = rows[1:]
        seconds_taken = sum(num_envs * rollout / r["sps"] for r in counted)
        return {"env_steps_per_s": num_envs * rollout * len(counted) / seconds_taken}
    raise SystemExit(f"unknown workload {kind!r}")


@contextmanager
def competitor(max_seconds: float):
    """One CPU-bound process beside the measurement; stopped on exit (and by itself at the latest
    after ``max_seconds``)."""
    process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=max_seconds)])
    try:
        time.sleep(0.3)  # let it reach its loop
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_child(kind: str, seconds: float, pythonpath: str | None, settings: dict) -> float:
    # The children get only the thread settings asked for here: a shell's own OMP_WAIT_POLICY
    # (say) would hide the package's defaults.
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(settings)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--seconds", str(seconds)], env=env,
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])["env_steps_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=2, help="quiet/loaded pairs per workload")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window of an env workload")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="the competitor's own time limit")
    parser.add_argument("--against", help="also measure this git revision, interleaved with the working tree")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for every child (repeatable)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "contention.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds)))
        return
    settings = dict(item.split("=", 1) for item in args.set)
    load_before = os.getloadavg()
    here = str(Path(__file__).resolve().parent.parent)
    with ExitStack() as stack:
        trees = {"this": here}
        if args.against:
            trees[args.against] = str(stack.enter_context(exported(args.against)))
        results = {name: {kind: {"quiet": [], "loaded": []} for kind in args.workloads.split(",")} for name in trees}
        for _ in range(args.rounds):
            for kind in args.workloads.split(","):
                for name, tree in trees.items():
                    results[name][kind]["quiet"].append(run_child(kind, args.seconds, tree, settings))
                    with competitor(args.max_seconds):
                        results[name][kind]["loaded"].append(run_child(kind, args.seconds, tree, settings))
    load_after = os.getloadavg()
    rows = []
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {os.cpu_count()} cores")
    print(f"{'tree':10} {'workload':9} {'quiet steps/s':>14} {'loaded steps/s':>15} {'loaded/quiet':>13}")
    for name, by_kind in results.items():
        for kind, runs in by_kind.items():
            quiet, loaded = statistics.median(runs["quiet"]), statistics.median(runs["loaded"])
            rows.append({"tree": name, "workload": kind, "quiet": quiet, "loaded": loaded, "ratio": loaded / quiet,
                         "quiet_runs": runs["quiet"], "loaded_runs": runs["loaded"]})
            print(f"{name:10} {kind:9} {quiet:14,.0f} {loaded:15,.0f} {loaded / quiet:13.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cores": os.cpu_count(), "machine": platform.machine(), "settings": settings,
            "load_average_before": load_before, "load_average_after": load_after, "rounds": args.rounds}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
