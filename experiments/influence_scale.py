"""How large the basic influence reward is at initialisation, and what sets its size.

    python experiments/influence_scale.py

Harvest, 5 agents, 3 influencers, the ``influence`` model's policies as initialised (seed 0)
acting for 50 steps in 8 envs. For each policy-head scale (the init bound of the logit layer,
0.01 by default), action-block scale (a factor on the influencees' input-weight rows of the
influencers' one-hot actions) and divergence, prints the mean |influence| per influencer per
step, computed as the trainer does (float32) and with the divergence evaluated in float64 from
the same counterfactual logits and the influencer's probabilities renormalised (in float32 they
sum to 1 within ~1e-7, and the KL inherits an error of that size). Writes ``experiments/results/influence_scale.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ssdinfluence import policies
from ssdinfluence.envs import make
from ssdinfluence.influence import divergence

STEPS, ENVS, AGENTS, INFLUENCERS = 50, 8, 5, 3


def divergence_float64(cf_logits, cf_logprobs, actual, kind="kl", taken=None):
    # renormalised: the float32 log-probabilities of the influencer sum to 1 only within ~1e-7,
    # which shifts the log-marginal, hence the KL, by as much
    cf_logprobs = torch.log_softmax(cf_logprobs.double(), dim=-2)
    return divergence(cf_logits.double(), cf_logprobs, actual, kind, taken).float()


def mean_influence(head_scale: float, block_scale: float, kind: str, float64: bool) -> float:
    env = make("harvest", num_envs=ENVS, num_agents=AGENTS, seed=0)
    obs, _ = env.reset()
    torch.manual_seed(0)
    policy = policies.BasicInfluence(AGENTS, env.num_actions, INFLUENCERS, kind, False, "cpu")
    net = policy.networks
    with torch.no_grad():
        net.policy.weight.mul_(head_scale / 0.01)
        net.policy.bias.mul_(head_scale / 0.01)
        net.lstm.weight_ih[:, net.lstm.weight_ih.shape[1] - net.extra_size:].mul_(block_scale)
    sampler = torch.Generator().manual_seed(1)
    state = policy.initial_state(ENVS, "cpu")
    start = torch.zeros(ENVS, dtype=torch.bool)
    values = []
    policies.divergence = divergence_float64 if float64 else divergence
    try:
        for _ in range(STEPS):
            with torch.no_grad():
                out = policy.act(torch.from_numpy(obs), None, None, state, start, sampler)
            state = out.state
            values.append(out.influence[:, :INFLUENCERS].abs().mean().item())
            obs, *_ = env.step(out.actions.T.numpy())
    finally:
        policies.divergence = divergence
    return float(np.mean(values))


def main():
    torch.set_num_threads(1)
    rows = []
    print(f"{'head scale':>10} {'block scale':>11} {'divergence':>10} {'float32':>10} {'float64':>10}")
    for head_scale in (0.01, 0.1, 1.0):
        for block_scale in (1.0, 10.0):
            for kind in ("kl", "pmi"):
                f32, f64 = (mean_influence(head_scale, block_scale, kind, x) for x in (False, True))
                rows.append({"head_scale": head_scale, "block_scale": block_scale, "divergence": kind,
                             "float32": f32, "float64": f64})
                print(f"{head_scale:10g} {block_scale:11g} {kind:>10} {f32:10.3g} {f64:10.3g}", flush=True)
    out = Path(__file__).parent / "results" / "influence_scale.json"
    out.write_text(json.dumps({"steps": STEPS, "envs": ENVS, "agents": AGENTS, "influencers": INFLUENCERS,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
