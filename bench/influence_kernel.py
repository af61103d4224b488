"""Cost of the influence reward: the batched counterfactual kernel vs rerunning the network.

    python bench/influence_kernel.py            # N in {2, 5, 8}, CPU (and CUDA when present)
    python bench/influence_kernel.py --device cuda --envs 1024

For B envs and N agents (A = 9 actions, Cleanup), every agent listens to a one-hot block per
influencer (the basic setting with one influencer, and the worst case where every agent
influences every other). Timed, per step, without gradients:
  forward: one forward pass of all N agents' networks (what acting costs);
  kernel: causal_influence, the reward path (on the CPU the fused Numba kernel of
          ssdinfluence.influence_cpu; on CUDA torch's ops): KL over all counterfactuals, from
          the gate pre-activations and hidden state the forward pass has already computed;
  torch ops: counterfactual_logits + divergence, the same result from a dozen torch ops (the
          CPU path before the fused kernel, and the CUDA path now);
  naive: the whole network rerun once per counterfactual value (A passes per influencer).
Threads as the trainer sets them (threads.configure: on 2 cores, one torch thread).
Forward, kernel and torch ops take turns, round by round (``--repeats`` rounds of about 2 ms
each): the times are medians, the ratios medians of each round's ratio, so that a machine whose
speed drifts between measurements does not bias them. The naive rerun is timed on its own.
Goal: the kernel costs at most 30% of a forward pass per influencer.
Writes bench/results/influence_kernel.json.
"""

# ruff: noqa: I001  (the import order below is deliberate)
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import ssdinfluence  # noqa: F401  (before torch: its thread settings must precede torch's start)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import alternated, timed  # noqa: E402

from ssdinfluence import threads
from ssdinfluence.influence import causal_influence, counterfactual_logits, divergence
from ssdinfluence.networks import AgentNetworks

A = 9


def measure(N, B, influencers, device, repeats):
    torch.manual_seed(0)
    model = AgentNetworks(N, A, extra_size=influencers * A).to(device)
    obs = torch.randint(0, 256, (B, N, 15, 15, 3), dtype=torch.uint8, device=device)
    actual = torch.randint(0, A, (B, influencers), device=device)
    extra = torch.nn.functional.one_hot(actual, A).float().reshape(1, B, -1).expand(N, B, -1).contiguous()
    h, c = (torch.randn(N, B, 128, device=device) for _ in range(2))
    start = torch.zeros(B, dtype=torch.bool, device=device)
    speaker_logprobs = torch.log_softmax(torch.randn(influencers, B, A, device=device), -1)

    def sync(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    @torch.no_grad()
    def forward():
        model.step(obs, extra, (h, c), start)

    block = model.lstm.weight_ih[:, 32:].reshape(N, influencers, A, -1)
    act = actual.T.unsqueeze(0).expand(N, influencers, B)
    speaker = speaker_logprobs.transpose(1, 2).unsqueeze(0).expand(N, influencers, A, B)

    @torch.no_grad()
    def kernel():
        causal_influence(gates_cached, c, block, act, model.policy.weight, model.policy.bias, speaker,
                         hidden_now=hidden_cached)

    @torch.no_grad()
    def torch_ops():
        logits = counterfactual_logits(gates_cached, c, block, act, model.policy.weight, model.policy.bias)
        divergence(logits, speaker, act, "kl")

    @torch.no_grad()
    def naive():
        for q in range(influencers):
            for a in range(A):
                changed = extra.clone()
                changed[:, :, q * A:(q + 1) * A] = 0
                changed[:, :, q * A + a] = 1
                model.step(obs, changed, (h, c), start)

    with torch.no_grad():
        gates_cached = model.lstm.gates(model.lstm_inputs(model.features(obs), extra), h)
        hidden_cached = model.lstm.activate(gates_cached, c)[0]
    times = alternated({"forward": sync(forward), "kernel": sync(kernel), "torch_ops": sync(torch_ops)}, repeats)
    t_forward, t_kernel, t_torch_ops = (statistics.median(times[name]) for name in ("forward", "kernel", "torch_ops"))
    kernel_ratio = statistics.median(k / f for k, f in zip(times["kernel"], times["forward"], strict=True))
    ops_ratio = statistics.median(k / f for k, f in zip(times["torch_ops"], times["forward"], strict=True))
    t_naive = timed(sync(naive), max(1, repeats // 10))  # A passes per influencer: indicative only
    return {"agents": N, "envs": B, "influencers": influencers, "device": str(device),
            "forward_ms": 1e3 * t_forward, "kernel_ms": 1e3 * t_kernel, "torch_ops_ms": 1e3 * t_torch_ops,
            "naive_ms": 1e3 * t_naive, "kernel_over_forward": kernel_ratio,
            "kernel_over_forward_per_influencer": kernel_ratio / influencers,
            "torch_ops_over_forward": ops_ratio, "naive_over_forward": t_naive / t_forward}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30,
                        help="rounds in which forward, kernel and torch ops take turns (medians reported)")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cpu and, when present, cuda)")
    parser.add_argument("--threads", type=int, default=0, help="threads.configure's count (0: the trainer's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "influence_kernel.json"))
    args = parser.parse_args()
    threads.configure(args.threads)
    if args.device == "all":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(args.device)]
    rows = []
    for device in devices:
        for N in (2, 5, 8):
            for influencers in sorted({1, N - 1}):
                rows.append(measure(N, args.envs, influencers, device, args.repeats))
    print(f"{'device':6} {'N':>2} {'infl':>4} {'forward ms':>10} {'kernel ms':>10} {'torch ops ms':>12} "
          f"{'naive ms':>9} {'kernel/fwd':>10} {'per infl':>8} {'ops/fwd':>7} {'naive/fwd':>9}")
    for r in rows:
        print(f"{r['device']:6} {r['agents']:2d} {r['influencers']:4d} {r['forward_ms']:10.2f} {r['kernel_ms']:10.2f} "
              f"{r['torch_ops_ms']:12.2f} {r['naive_ms']:9.2f} {r['kernel_over_forward']:10.2f} "
              f"{r['kernel_over_forward_per_influencer']:8.2f} {r['torch_ops_over_forward']:7.2f} "
              f"{r['naive_over_forward']:9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
