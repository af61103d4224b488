"""The counterfactual kernel against a naive version that reruns the network A times, and the
divergences on analytic toys."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch

from ssdinfluence.influence import causal_influence, counterfactual_logits, divergence, influence_beta
from ssdinfluence.networks import AgentNetworks


def naive_counterfactual_logits(model, obs, extra, state, blocks, fc_size=32):
    """Rerun the whole network once per (block, value): ``[P, Q, A, M, K]`` policy logits."""
    out = []
    for offset, size in blocks:
        per_value = []
        for a in range(size):
            changed = extra.clone()
            changed[:, :, offset:offset + size] = 0.0
            changed[:, :, offset + a] = 1.0
            logits, _, _ = model.step(obs, changed, state, torch.zeros(obs.shape[0], dtype=torch.bool))
            per_value.append(logits)  # [P, M, K]
        out.append(torch.stack(per_value, dim=1))  # [P, A, M, K]
    return torch.stack(out, dim=1)


def kernel_logits(model, obs, extra, state, blocks, fc_size=32):
    h, c = state
    gates_x = model.lstm_inputs(model.features(obs), extra)
    hh = torch.bmm(h, model.lstm.weight_hh)
    weight = model.lstm.weight_ih  # [P, fc + E, G]
    block_weight = torch.stack([weight[:, fc_size + off:fc_size + off + size] for off, size in blocks], dim=1)
    actual = torch.stack([extra[:, :, off:off + size].argmax(-1) for off, size in blocks], dim=1)  # [P, Q, M]
    return counterfactual_logits(gates_x + hh, c, block_weight, actual, model.policy.weight, model.policy.bias)


@pytest.mark.parametrize("num_agents", [2, 5])
def test_kernel_equals_rerunning_the_network(num_agents):
    torch.manual_seed(0)
    A, M = 9, 6
    blocks = [(k * A, A) for k in range(num_agents)]  # one one-hot block per agent
    model = AgentNetworks(num_agents, A, extra_size=num_agents * A)
    obs = torch.randint(0, 256, (M, num_agents, 15, 15, 3), dtype=torch.uint8)
    values = torch.randint(0, A, (num_agents, M, num_agents))
    extra = torch.nn.functional.one_hot(values, A).float().reshape(num_agents, M, num_agents * A)
    state = (torch.randn(num_agents, M, 128), torch.randn(num_agents, M, 128))
    fast = kernel_logits(model, obs, extra, state, blocks)
    slow = naive_counterfactual_logits(model, obs, extra, state, blocks)
    assert fast.shape == (num_agents, num_agents, A, M, A)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # gradients flow the same way through both
    probe = torch.randn_like(fast)
    parameters = list(model.parameters())
    grads_fast = torch.autograd.grad((fast * probe).sum(), parameters, allow_unused=True)
    grads_slow = torch.autograd.grad((slow * probe).sum(), parameters, allow_unused=True)
    for p, gf, gs in zip(parameters, grads_fast, grads_slow, strict=True):
        gf = torch.zeros_like(p) if gf is None else gf  # e.g. the value head: no gradient either way
        gs = torch.zeros_like(p) if gs is None else gs
        torch.testing.assert_close(gf, gs, atol=1e-5, rtol=1e-4)


def toy(conditional, influencer_probs, actual):
    """Listener logits from a table ``conditional[a~] = p(. | a~)`` (one listener, one block)."""
    logits = torch.log(torch.tensor(conditional, dtype=torch.float64)).view(1, len(conditional), 1, -1)
    logprobs = torch.log(torch.tensor(influencer_probs, dtype=torch.float64)).view(1, -1, 1)
    return logits, logprobs, torch.tensor([[actual]])


def test_a_listener_that_ignores_the_speaker_has_zero_influence():
    logits, logprobs, actual = toy([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]], [0.5, 0.3, 0.2], 1)
    for kind in ("kl", "jsd"):
        assert divergence(logits, logprobs, actual, kind).item() == pytest.approx(0.0, abs=1e-12)
    assert divergence(logits, logprobs, actual, "pmi", taken=torch.tensor([[0]])).item() == pytest.approx(0.0, abs=1e-12)


def test_a_copying_listener_has_the_known_kl():
    # the listener copies the speaker's action: p(a^j | a~) = onehot(a~) (almost), speaker
    # policy (0.5, 0.25, 0.25). Given a~ = 1 the conditional is onehot(1); the marginal is the
    # speaker's policy, so KL = log(1 / 0.25) = log 4.
    eps = 1e-12
    cond = [[1 - 2 * eps, eps, eps], [eps, 1 - 2 * eps, eps], [eps, eps, 1 - 2 * eps]]
    logits, logprobs, actual = toy(cond, [0.5, 0.25, 0.25], 1)
    assert divergence(logits, logprobs, actual, "kl").item() == pytest.approx(math.log(4), rel=1e-6)
    logits, logprobs, actual = toy(cond, [0.5, 0.25, 0.25], 0)
    assert divergence(logits, logprobs, actual, "kl").item() == pytest.approx(math.log(2), rel=1e-6)


def test_expected_kl_influence_is_the_mutual_information():
    torch.manual_seed(1)
    cond = torch.softmax(torch.randn(4, 3, dtype=torch.float64), -1)  # p(a^j | a~), 4 speaker actions
    speaker = torch.softmax(torch.randn(4, dtype=torch.float64), -1)
    logits = cond.log().view(1, 4, 1, 3).expand(4, 4, 1, 3)  # one row per actual action
    actual = torch.arange(4).view(4, 1)
    kl = divergence(logits, speaker.log().view(1, 4, 1).expand(4, 4, 1), actual, "kl").view(4)
    joint = speaker[:, None] * cond
    marginal = joint.sum(0)
    mutual_information = (joint * (joint / (speaker[:, None] * marginal[None])).log()).sum()
    assert (speaker * kl).sum().item() == pytest.approx(mutual_information.item(), rel=1e-9)


def test_jsd_and_pmi_by_hand():
    # two speaker actions with probability 1/2 each; p(.|0) = (1, 0), p(.|1) = (0, 1):
    # marginal (1/2, 1/2); JSD(onehot, uniform) with M = (3/4, 1/4):
    # 0.5 * log(1 / 0.75) + 0.5 * (0.5 log(0.5/0.75) + 0.5 log(0.5/0.25))
    logits, logprobs, actual = toy([[1.0, 1e-300], [1e-300, 1.0]], [0.5, 0.5], 0)
    expected = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert divergence(logits, logprobs, actual, "jsd").item() == pytest.approx(expected, rel=1e-9)
    # PMI of the taken outcome 0 given a~ = 0: log(1 / 0.5) = log 2
    assert divergence(logits, logprobs, actual, "pmi", taken=torch.tensor([[0]])).item() == pytest.approx(math.log(2))


def test_no_nan_or_inf_for_near_deterministic_policies():
    logits = torch.tensor([[[[1e4, -1e4, 0.0]], [[-1e4, 1e4, -1e4]], [[0.0, -1e4, 1e4]]]])  # [1, 3, 1, 3]
    logprobs = torch.log_softmax(torch.tensor([[[1e4], [-1e4], [0.0]]]).squeeze(-1), -1).view(1, 3, 1)
    for actual in range(3):
        for kind in ("kl", "jsd", "pmi"):
            value = divergence(logits, logprobs, torch.tensor([[actual]]), kind, taken=torch.tensor([[1]]))
            assert torch.isfinite(value).all(), (kind, actual, value)


def test_influence_beta_schedules():
    assert influence_beta(0, 2.0, ramp_steps=100) == 0.0
    assert influence_beta(50, 2.0, ramp_steps=100) == 1.0
    assert influence_beta(500, 2.0, ramp_steps=100) == 2.0
    assert influence_beta(5e6, 2.0, schedule="reference") == 0.0
    assert influence_beta(5.5e7, 2.0, schedule="reference") == pytest.approx(1.0)
    assert influence_beta(2e8, 2.0, schedule="reference") == pytest.approx(1.5)
    assert influence_beta(4e8, 2.0, schedule="reference") == 1.0
    with pytest.raises(ValueError, match="unknown influence schedule"):
        influence_beta(0, 1.0, schedule="cosine")


def random_influence_inputs(P=3, Q=2, A=9, M=11, H=16, K=9, scale=2.0, seed=0):
    """Inputs of :func:`causal_influence` at gate scales beyond a trained network's."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        gates=scale * torch.randn(P, M, 4 * H, generator=g),
        c_prev=scale * torch.randn(P, M, H, generator=g), block_weight=scale * torch.randn(P, Q, A, 4 * H, generator=g),
        actual=torch.randint(0, A, (P, Q, M), generator=g), head_weight=torch.randn(P, H, K, generator=g),
        head_bias=torch.randn(P, 1, K, generator=g),
        speaker_logprobs=torch.log_softmax(3 * torch.randn(P, Q, A, M, generator=g), 2))


@pytest.mark.parametrize("kind,groups", [("kl", 1), ("jsd", 1), ("pmi", 1), ("kl", 3), ("jsd", 3)])
def test_fused_cpu_kernel_equals_the_torch_ops(kind, groups):
    inputs = random_influence_inputs(K=9 * groups)
    taken = torch.randint(0, 9, inputs["actual"].shape) if kind == "pmi" else None
    with torch.no_grad():  # the fused Numba kernel
        fused = causal_influence(**inputs, kind=kind, taken=taken, groups=groups)
    torch_ops = causal_influence(**inputs, kind=kind, taken=taken, groups=groups)  # autograd on: torch's ops
    assert fused.shape == torch_ops.shape == (3, 2, groups, 11)
    # by hand for one cell: counterfactual_logits + divergence on the group's slice of the head
    logits = counterfactual_logits(*(inputs[k] for k in ("gates", "c_prev", "block_weight", "actual", "head_weight",
                                                        "head_bias")))  # [P, Q, A, M, K]
    last = logits[..., -9:]
    by_hand = divergence(last, inputs["speaker_logprobs"], inputs["actual"], kind,
                         taken=taken)  # the last group, [P, Q, M]
    torch.testing.assert_close(fused, torch_ops, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[:, :, -1], by_hand, atol=1e-5, rtol=1e-5)
    assert fused.abs().max() > 1e-2  # the inputs make real influence, so the comparison means something


@pytest.mark.parametrize("groups", [1, 3])
def test_only_the_wanted_pairs_are_computed_and_the_rest_are_zero(groups):
    inputs = random_influence_inputs(K=9 * groups)
    pairs = torch.tensor([[True, False], [False, False], [True, True]])
    with torch.no_grad():
        every = causal_influence(**inputs, groups=groups)
        fused = causal_influence(**inputs, groups=groups, pairs=pairs)
    torch_ops = causal_influence(**inputs, groups=groups, pairs=pairs)  # autograd on: torch's ops
    torch.testing.assert_close(fused, torch_ops, atol=1e-5, rtol=1e-5)
    assert torch.equal(fused[pairs], every[pairs])
    assert (fused[~pairs] == 0).all() and (every[~pairs].abs().amax(-1) > 1e-2).all()  # skipped, not just small
    with pytest.raises(ValueError, match=r"pairs must be \[P, Q\] = \[3, 2\], got \[2, 3\]"):
        causal_influence(**inputs, pairs=pairs.T)


@pytest.mark.parametrize("kind,groups", [("kl", 1), ("jsd", 3)])
def test_only_the_wanted_outcome_groups_are_computed_and_the_rest_are_zero(kind, groups):
    """A model of other agents needs only the agents in its view: the kernel skips the head
    outputs of the other groups, and whole samples where no group is wanted."""
    inputs = random_influence_inputs(K=9 * groups)
    g = torch.Generator().manual_seed(1)
    wanted = torch.rand(3, groups, 11, generator=g) < 0.5
    wanted[1, :, 4] = False  # nothing wanted of listener 1 in sample 4
    wanted[2, :, 7] = True
    with torch.no_grad():
        every = causal_influence(**inputs, kind=kind, groups=groups)
        fused = causal_influence(**inputs, kind=kind, groups=groups, groups_wanted=wanted)
    torch_ops = causal_influence(**inputs, kind=kind, groups=groups, groups_wanted=wanted)  # autograd on
    torch.testing.assert_close(fused, torch_ops, atol=1e-5, rtol=1e-5)
    mask = wanted.unsqueeze(1).expand_as(fused)
    assert torch.equal(fused[mask], every[mask])  # a wanted group's value does not depend on the others
    assert (fused[~mask] == 0).all() and (every[~mask].abs() > 1e-3).float().mean() > 0.9
    with pytest.raises(ValueError, match=r"groups_wanted must be bool \[P, groups, M\] = \[3, 1, 11\]"):
        causal_influence(**random_influence_inputs(), groups_wanted=wanted[:, :1, :5])
    with pytest.raises(ValueError, match=r"got torch.float32 \[3, 1, 11\]"):
        causal_influence(**random_influence_inputs(), groups_wanted=wanted[:, :1].float())


def test_the_kernel_takes_the_actual_values_hidden_state_as_given():
    """``hidden_now`` (the step's own hidden state) replaces the kernel's own computation of the
    actual value's counterfactual: the same result to float rounding, and it is really read."""
    inputs = random_influence_inputs()
    gates, c_prev = inputs["gates"], inputs["c_prev"]
    i, f, g, o = gates.chunk(4, -1)
    hidden = torch.sigmoid(o) * torch.tanh(torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g))
    with torch.no_grad():
        computed = causal_influence(**inputs, kind="jsd")
        given = causal_influence(**inputs, kind="jsd", hidden_now=hidden)
        wrong = causal_influence(**inputs, kind="jsd", hidden_now=hidden.flip(1))
    torch.testing.assert_close(given, computed, atol=1e-5, rtol=1e-5)
    assert (wrong - computed).abs().max() > 1e-2
    with pytest.raises(ValueError, match=r"hidden_now must be \[P, M, H\] = \[3, 11, 16\]"):
        causal_influence(**inputs, hidden_now=hidden[:, :3])


def test_fused_cpu_kernel_stays_finite_where_probabilities_underflow():
    inputs = random_influence_inputs(scale=60.0)  # saturated gates; logits hundreds apart
    inputs["head_weight"] = inputs["head_weight"] * 50.0
    with torch.no_grad():
        fused = {kind: causal_influence(**inputs, kind=kind, taken=inputs["actual"]) for kind in ("kl", "jsd", "pmi")}
    for kind, value in fused.items():
        assert torch.isfinite(value).all(), kind
        torch.testing.assert_close(value, causal_influence(**inputs, kind=kind, taken=inputs["actual"]),
                                   atol=1e-4, rtol=1e-5)
    assert (fused["kl"] >= 0).all() and (fused["jsd"] >= 0).all() and (fused["jsd"] <= math.log(2) + 1e-6).all()


@pytest.mark.parametrize("values", [2, 7])
def test_fused_cpu_kernel_takes_any_number_of_values(values):
    """The head's dot products go three values at a time, the rest one by one (Harvest's
    messages have 7 values)."""
    inputs = random_influence_inputs(A=values)
    with torch.no_grad():
        fused = causal_influence(**inputs, kind="jsd")
    torch.testing.assert_close(fused, causal_influence(**inputs, kind="jsd"), atol=1e-5, rtol=1e-5)
    assert fused.abs().max() > 1e-2


def test_fused_cpu_kernel_mixes_factored_and_direct_exponentials_exactly():
    """exp(-(shared + row)) is taken as a product of two exps, except for a sample whose gates
    or a listener whose rows lie beyond exp's clamp: there the exp of the sum (both paths in one call)."""
    inputs = random_influence_inputs(P=3, Q=2, M=11, scale=1.5)
    inputs["gates"][1, 4, :5] = 95.0  # one sample of listener 1 saturates a few gates
    inputs["block_weight"][2, 1, 3, 40] = -90.0  # one row of listener 2's second block is huge
    with torch.no_grad():
        fused = causal_influence(**inputs, kind="jsd")
    torch.testing.assert_close(fused, causal_influence(**inputs, kind="jsd"), atol=1e-5, rtol=1e-5)
    assert fused.abs().max() > 1e-2


def test_causal_influence_rejects_a_bad_kind_or_pmi_without_the_outcome():
    inputs = random_influence_inputs()
    with pytest.raises(ValueError, match="unknown divergence 'l2'"):
        causal_influence(**inputs, kind="l2")
    with pytest.raises(ValueError, match="pmi needs the outcome"):
        causal_influence(**inputs, kind="pmi")


def test_fused_cpu_kernel_gives_the_same_result_at_any_thread_count():
    inputs = random_influence_inputs(P=4, Q=2, M=64)  # 4 x 2 x 9 x 64 cells: work for 2 threads
    before = numba.get_num_threads()
    results = []
    try:
        for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(count)
            with torch.no_grad():
                results.append(causal_influence(**inputs, kind="jsd"))
    finally:
        numba.set_num_threads(before)
    assert torch.equal(results[0], results[1])


def test_the_kernels_vectorised_log_is_accurate_over_the_range_it_serves():
    """The kernel takes the logs of its sums of exps (>= 1) with a polynomial of its own."""
    from ssdinfluence.influence_cpu import _log_into

    rng = np.random.default_rng(0)
    x = np.concatenate([[1.0, math.sqrt(2.0), 2.0, 405.0, 1e-30, 3e38], 1.0 + 404.0 * rng.random(5000),
                        np.exp(rng.uniform(-80.0, 80.0, 5000))]).astype(np.float32)
    out, bits = np.empty_like(x), np.empty(len(x), np.int32)
    _log_into(x, out, bits, len(x))
    exact = np.log(x.astype(np.float64))
    np.testing.assert_allclose(out, exact, rtol=3e-7, atol=2e-7)
