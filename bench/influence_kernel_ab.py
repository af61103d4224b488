"""The influence kernel of the working tree against another revision's, paired in one process.

    python bench/influence_kernel_ab.py --against 969cbf8
    python bench/influence_kernel_ab.py --against HEAD~1 --threads 2 --rounds 60

Loads ``ssdinfluence/influence_cpu.py`` of the working tree and of git revision REV side by
side and calls the two kernels on the same inputs, alternating A, B, A, B, ... ``--rounds``
times (each turn about 2 ms of calls). Reports each kernel's median time per call and the median
and interquartile range of the per-round ratio new / old. On a shared VM whose speed drifts by
tens of percent from minute to minute, only such paired ratios mean anything.

Cases (A = 9 values, H = 128, the shapes of the trainer's calls at its default batch):
  comm: 5 listeners x 4 speakers (not themselves), 128 envs, the policy head (K = 9);
  moa: 5 predictors, each varying its own action, 128 envs, a head of 5 x 9 outcomes of which
       46% are wanted (the others in view: Cleanup under random play) and never the own;
  basic: 5 listeners x 1 and x 4 influencers, 32 envs (bench/influence_kernel.py's shapes).
Revisions before the kernel took ``hidden_now`` and ``wanted`` (378957f) are called in their
own signature: they compute every outcome group and the actual value's counterfactual too.
Both kernels are compiled afresh, into a temporary Numba cache: the same kernel loaded from
Numba's cache ran 3.5% slower here than compiled in the process (same bits out), which would
bias a comparison of a cached tree against a freshly exported one.
Writes bench/results/influence_kernel_ab.json (``--out``).
"""

# ruff: noqa: E402, I001  (Numba's cache directory must be set before numba is imported)
from __future__ import annotations

import os
import tempfile

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssdinfluence-numba-")

import argparse
import importlib.util
import inspect
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
A, H = 9, 128


def load_kernel(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.influence_kernel


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def make_case(rng, P, Q, M, groups, pairs, visible=1.0):
    """The kernel's inputs for one case: a dict of arrays, and the (p, q) pairs."""
    G, K = 4 * H, A * groups
    wanted = rng.random((P, groups, M)) < visible
    if groups > 1:
        for p in range(P):
            wanted[p, p] = False  # a model of other agents never scores its own agent
    gates, c_prev = 0.5 * rng.standard_normal((P, M, G)), 0.5 * rng.standard_normal((P, M, H))
    i, f, g, o = np.split(gates, 4, axis=-1)
    hidden_now = _sigmoid(o) * np.tanh(_sigmoid(f) * c_prev + _sigmoid(i) * np.tanh(g))  # the actual values' h
    return {
        "gates": gates.astype(np.float32), "c_prev": c_prev.astype(np.float32),
        "hidden_now": hidden_now.astype(np.float32),
        "block": (0.3 * rng.standard_normal((P, Q, A, G))).astype(np.float32),
        "actual": rng.integers(0, A, (P, Q, M)),
        "head_weight": (0.1 * rng.standard_normal((P, K, H))).astype(np.float32),
        "head_bias": rng.standard_normal((P, K)).astype(np.float32),
        "speaker": np.log(rng.dirichlet(np.ones(A), (P, Q, M))).transpose(0, 1, 3, 2).astype(np.float32).copy(),
        "pairs": np.argwhere(pairs), "wanted": wanted, "groups": groups,
    }


def caller(kernel, case):
    """A no-argument call of ``kernel`` on ``case`` in the kernel's own signature, and its output."""
    c = case
    P, Q, M = c["actual"].shape
    out = np.zeros((P, Q, c["groups"], M), np.float32)
    if "hidden_now" in inspect.signature(kernel.py_func).parameters:
        args = (c["gates"], c["c_prev"], c["hidden_now"], c["block"], c["actual"], c["head_weight"], c["head_bias"],
                c["speaker"], c["actual"], 0, c["pairs"], c["wanted"], out)
    else:  # before 378957f: every group and value computed
        args = (c["gates"], c["c_prev"], c["block"], c["actual"], c["head_weight"], c["head_bias"], c["speaker"],
                c["actual"], c["groups"], 0, c["pairs"], out)
    return (lambda: kernel(*args)), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads for both kernels")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "influence_kernel_ab.json"))
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    not_self = ~np.eye(5, dtype=bool)
    cases = {
        "comm 5 x 4, 128 envs": make_case(rng, 5, 5, 128, 1, not_self),
        "moa 5, 46% in view, 128 envs": make_case(rng, 5, 1, 128, 5, np.ones((5, 1), bool), visible=0.46),
        "basic 5 x 1, 32 envs": make_case(rng, 5, 1, 32, 1, np.ones((5, 1), bool)),
        "basic 5 x 4, 32 envs": make_case(rng, 5, 4, 32, 1, np.ones((5, 4), bool)),
    }
    with exported(args.against) as tree:
        old_kernel = load_kernel(tree / "ssdinfluence" / "influence_cpu.py", "influence_cpu_old")
        new_kernel = load_kernel(ROOT / "ssdinfluence" / "influence_cpu.py", "influence_cpu_new")
        rows = []
        for name, case in cases.items():
            old, old_out = caller(old_kernel, case)
            new, new_out = caller(new_kernel, case)
            summary = old_new_summary(alternated({"old": old, "new": new}, args.rounds))
            wanted = case["wanted"][:, None] & np.ones(old_out.shape, bool)  # what both must agree on
            rows.append({"case": name, **summary,
                         "max_abs_difference": float(np.abs(old_out - new_out)[wanted].max())})
    print(f"{'case':30} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'IQR':>13} {'max |diff|':>10}")
    for r in rows:
        print(f"{r['case']:30} {r['old_ms']:8.3f} {r['new_ms']:8.3f} {r['ratio_median']:8.3f} "
              f"{r['ratio_q1']:6.3f}-{r['ratio_q3']:.3f} {r['max_abs_difference']:10.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", "bench/influence_kernel_ab.py", *sys.argv[1:]]),
                               "against": args.against, "threads": args.threads, "rounds": args.rounds,
                               "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)
