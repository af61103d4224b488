"""The conv kernels of the working tree against another revision's, paired in one process.

    python bench/conv_kernel_ab.py --against 6141917
    python bench/conv_kernel_ab.py --against HEAD~1 --threads 2

Loads ``ssdinfluence/conv_cpu.py`` of the working tree and of git revision REV side by side and
calls both revisions' forward and weight-gradient kernels on the same inputs, alternating them
``--rounds`` times (``timing.alternated``). Reports each one's median time per call and the
median and interquartile range of the per-round ratio new / old. Cases: a PPO minibatch of the
default batch (32 sequences x 32 steps = 1,024 samples, 5 agents), forward and gradient, and
one rollout step (128 envs, 5 agents), forward. Both kernels are compiled afresh into a
temporary Numba cache (``influence_kernel_ab.py`` says why).

The two revisions may order the features differently (6141917 and before: pixel-major; since:
channel-major). The outputs are compared after putting the old ones in the new order, and the
old gradient kernel is given the same gradient in its own order.
Writes bench/results/conv_kernel_ab.json (``--out``).
"""

# ruff: noqa: E402, I001  (Numba's cache directory must be set before numba is imported)
from __future__ import annotations

import os
import tempfile

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssdinfluence-numba-")

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision import exported
from timing import alternated, old_new_summary

ROOT = Path(__file__).resolve().parent.parent
N, C, PIXELS = 5, 6, 169


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixel_major(x):
    """Channel-major features ``[N, M, C*P]`` in pixel-major order ``[N, M, P*C]``."""
    return x.reshape(N, -1, C, PIXELS).transpose(0, 1, 3, 2).reshape(x.shape).copy()


def make_case(rng, M):
    return {"obs": rng.integers(0, 256, (M, N, 15, 15, 3), dtype=np.uint8),
            "weight": (rng.standard_normal((N * C, 3, 3, 3)) / 255).astype(np.float32),
            "bias": rng.standard_normal(N * C).astype(np.float32),
            "grad": rng.standard_normal((N, M, C * PIXELS)).astype(np.float32)}


def measure(kernels: dict, name: str, case: dict, rounds: int) -> list[dict]:
    """Rows of the paired timings of ``kernels`` (old, new: the two modules) on ``case``: the
    forward, and for a minibatch the weight gradient, with the two revisions' differences."""
    obs, weight, bias = case["obs"], case["weight"], case["bias"]
    M = obs.shape[0]
    out = {side: np.empty((N, M, C * PIXELS), np.float32) for side in kernels}
    for side, kernel in kernels.items():
        kernel.conv_relu_forward(obs, weight, bias, out[side])
    old_is_pixel_major = np.array_equal(out["old"], pixel_major(out["new"]))
    grad = {"new": case["grad"], "old": pixel_major(case["grad"]) if old_is_pixel_major else case["grad"]}
    grads = {side: (np.empty_like(weight), np.empty_like(bias)) for side in kernels}

    def forward(side):
        return lambda: kernels[side].conv_relu_forward(obs, weight, bias, out[side])

    def gradient(side):
        return lambda: kernels[side].conv_relu_backward(obs, out[side], grad[side], *grads[side])

    parts = {"forward": forward, **({"weight gradient": gradient} if M > 128 else {})}
    rows = []
    for part, call in parts.items():
        times = alternated({side: call(side) for side in kernels}, rounds)
        rows.append({"case": f"{name}, {part}", **old_new_summary(times)})
    new_in_old_order = pixel_major(out["new"]) if old_is_pixel_major else out["new"]
    rows[-1]["max_abs_difference"] = {"output": float(np.abs(out["old"] - new_in_old_order).max())}
    if M > 128:
        rows[-1]["max_abs_difference"].update(
            weight_gradient=float(np.abs(grads["old"][0] - grads["new"][0]).max()),
            bias_gradient=float(np.abs(grads["old"][1] - grads["new"][1]).max()))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads for both revisions")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "conv_kernel_ab.json"))
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    cases = {"minibatch 1024 x 5": make_case(rng, 1024), "rollout step 128 x 5": make_case(rng, 128)}
    rows = []
    with exported(args.against) as tree:
        kernels = {"old": load(tree / "ssdinfluence" / "conv_cpu.py", "conv_cpu_old"),
                   "new": load(ROOT / "ssdinfluence" / "conv_cpu.py", "conv_cpu_new")}
        for name, case in cases.items():
            rows += measure(kernels, name, case, args.rounds)
    print(f"{'case':40} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'IQR':>13}")
    for r in rows:
        print(f"{r['case']:40} {r['old_ms']:8.3f} {r['new_ms']:8.3f} {r['ratio_median']:8.3f} "
              f"{r['ratio_q1']:6.3f}-{r['ratio_q3']:.3f}")
    for r in rows:
        if "max_abs_difference" in r:
            print(f"{r['case'].split(',')[0]}: max |new - old| {r['max_abs_difference']}")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"command": " ".join(["python", "bench/conv_kernel_ab.py", *sys.argv[1:]]),
                                    "against": args.against, "threads": args.threads, "rounds": args.rounds,
                                    "load_before": load_before, "rows": rows}, indent=2))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)
