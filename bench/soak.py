"""Soak: one long run with trajectory logging; its memory (RSS) over time should stay flat.

    python bench/soak.py                                  # 1e7 env steps (hours on 2 cores)
    python bench/soak.py --steps 2e5 --samples 10         # a quick check that it works

Trains 5 agents on Cleanup with the default batch (``--num-envs``, default 128, x 32 steps),
logging every episode of envs 0 and 1 to trajectories.h5 and checkpointing every 50 updates, in
a temporary run directory. After every update it reads the process's resident memory (VmRSS, Linux); it
prints ``--samples`` evenly spaced rows of env steps, wall time, RSS and the log's size, and
the growth of the peak RSS from the first tenth of the run to the last (what a leak would show). Writes
bench/results/soak-<steps>.json with every update's RSS.
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
from ssdinfluence.config import Config, build_config
from ssdinfluence.train import train


def rss_mib() -> float:
    """Resident set size of this process in MiB, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (the soak needs Linux)")


def soak(steps: int, env: str, model: str, num_envs: int, log_every: int, threads: int, device: str) -> dict:
    samples = []
    with tempfile.TemporaryDirectory() as out:
        run = Path(out) / "run"
        config = build_config({"env": env, "agents": 5, "model": model, "num_envs": num_envs, "steps": steps,
                               "out": str(run), "log_trajectories": "0,1", "log_every": log_every,
                               "checkpoint_every": 50, "threads": threads, "device": device})
        log = run / "trajectories.h5"
        start = time.perf_counter()

        def on_update(row):
            samples.append({"update": row["update"], "env_steps": row["env_steps"],
                            "wall_s": round(time.perf_counter() - start, 2), "rss_mib": round(rss_mib(), 1),
                            "log_mib": round(log.stat().st_size / 2**20, 2) if log.exists() else 0.0})

        result = train(config, on_update=on_update)
    # Peaks, not single samples: the trainer releases freed memory every few updates, so RSS is
    # a sawtooth and one sample can fall on a trough.
    tenth = max(1, len(samples) // 10)
    start = max(s["rss_mib"] for s in samples[:tenth])
    end = max(s["rss_mib"] for s in samples[-tenth:])
    return {"env": env, "model": model, "num_envs": num_envs, "steps": steps, "updates": result.updates,
            "log_every": log_every, "wall_s": samples[-1]["wall_s"], "rss_start_mib": start, "rss_end_mib": end,
            "rss_max_mib": max(s["rss_mib"] for s in samples), "rss_growth_mib": round(end - start, 1),
            "samples": samples}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=float, default=1e7, help="Env steps of the run (e.g. 1e7).")
    parser.add_argument("--env", default="cleanup")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--num-envs", type=int, default=Config.num_envs)
    parser.add_argument("--log-every", type=int, default=1, help="Log every k-th episode of envs 0 and 1.")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=20, help="Rows in the printed table.")
    parser.add_argument("--out", default=None, help="JSON file.  [default: bench/results/soak-<steps>.json]")
    args = parser.parse_args()
    steps = int(args.steps)
    ssdinfluence.make(args.env).warmup()
    result = soak(steps, args.env, args.model, args.num_envs, args.log_every, args.threads, args.device)

    samples = result["samples"]
    shown = sorted({round(i * (len(samples) - 1) / max(1, args.samples - 1)) for i in range(args.samples)})
    print(f"{args.env}, {args.model}, 5 agents, {args.num_envs} envs, {steps:,} env steps, "
          f"every {args.log_every} episode(s) of envs 0,1 logged")
    print(f"{'update':>7} {'env steps':>12} {'wall s':>9} {'RSS MiB':>9} {'log MiB':>9}")
    for i in shown:
        s = samples[i]
        print(f"{s['update']:7d} {s['env_steps']:12,d} {s['wall_s']:9.1f} {s['rss_mib']:9.1f} {s['log_mib']:9.2f}")
    print(f"peak RSS in the first tenth {result['rss_start_mib']:.1f} MiB, in the last {result['rss_end_mib']:.1f} MiB "
          f"(growth {result['rss_growth_mib']:+.1f} MiB), max {result['rss_max_mib']:.1f} MiB")

    out = Path(args.out or Path(__file__).parent / "results" / f"soak-{steps:.0e}.json".replace("+0", ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    meta = {"version": ssdinfluence.__version__, "torch": str(torch.__version__), "device": device,
            "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
            "machine": platform.processor() or platform.machine()}
    out.write_text(json.dumps({"meta": meta, "result": result}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
