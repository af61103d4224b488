"""End-to-end training throughput: env steps/s per model and algorithm, and where the time goes.

    python bench/train_speed.py                              # every model, PPO
    python bench/train_speed.py --models baseline,visible --algos ppo,a2c
    python bench/train_speed.py --models baseline --num-envs 64 --updates 10 --device cuda

Each row trains from scratch for ``--updates`` updates (after one warm-up update that is not
counted) with 5 agents on Cleanup, and reports env steps/s over the counted updates, split
into env stepping, the rollout's forward passes, the update (forward + backward + optimiser)
and logging, from the trainer's own timers. Writes bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numba
import torch

import ssdinfluence
from ssdinfluence.config import build_config
from ssdinfluence.train import TIMERS, train


def measure(env, model, algo, num_envs, rollout, updates, device, threads):
    rows = []
    with tempfile.TemporaryDirectory() as out:
        config = build_config({"env": env, "agents": 5, "model": model, "algo": algo, "num_envs": num_envs,
                               "rollout_length": rollout, "bptt_length": min(32, rollout),
                               "steps": num_envs * rollout * (updates + 1), "device": device, "threads": threads,
                               "out": out, "log_trajectories": "0", "checkpoint_every": 10_000})
        start = time.perf_counter()
        train(config, on_update=rows.append)
        wall = time.perf_counter() - start
    counted = rows[1:]  # the first update includes torch's own warm-up
    seconds = sum(r["env_s"] + r["forward_s"] + r["backward_s"] + r["logging_s"] for r in counted)
    steps = num_envs * rollout * len(counted)
    split = {name: sum(r[f"{name}_s"] for r in counted) / seconds for name in TIMERS}
    return {"env": env, "model": model, "algo": algo, "num_envs": num_envs, "rollout_length": rollout,
            "device": device, "env_steps_per_s": steps / sum(1.0 / r["sps"] * num_envs * rollout for r in counted),
            "share": split, "wall_s_with_setup": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cleanup")
    parser.add_argument("--models", default="baseline,visible,influence,moa,moa-baseline,comm,comm-baseline")
    parser.add_argument("--algos", default="ppo")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--rollout", type=int, default=128)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    args = parser.parse_args()
    ssdinfluence.make(args.env).warmup()
    rows = [measure(args.env, m, a, args.num_envs, args.rollout, args.updates, args.device, args.threads)
            for m in args.models.split(",") for a in args.algos.split(",")]
    print(f"{'model':9} {'algo':4} {'B':>4} {'T':>4} {'env steps/s':>12}  " + "  ".join(f"{t:>8}" for t in TIMERS))
    for r in rows:
        shares = "  ".join(f"{100 * r['share'][t]:7.1f}%" for t in TIMERS)
        print(f"{r['model']:9} {r['algo']:4} {r['num_envs']:4d} {r['rollout_length']:4d} {r['env_steps_per_s']:12,.0f}  {shares}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    meta = {"version": ssdinfluence.__version__, "torch": str(torch.__version__), "device": device,
            "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
            "machine": platform.processor() or platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
