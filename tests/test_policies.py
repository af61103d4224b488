"""Basic influence: influencers act first, influencees see their actions, the reward is Eq. 1."""

from __future__ import annotations

import pytest
import torch

from ssdinfluence.policies import BasicInfluence

N, A, B, M_INFL = 4, 9, 6, 2


def setup_policy(kind="kl", influencee_reward=False):
    torch.manual_seed(0)
    policy = BasicInfluence(N, A, influencers=M_INFL, kind=kind, influencee_reward=influencee_reward, device="cpu")
    obs = torch.randint(0, 256, (B, N, 15, 15, 3), dtype=torch.uint8)
    state = (torch.randn(N, B, 128), torch.randn(N, B, 128))
    return policy, obs, state


def test_changing_an_influencers_action_changes_the_influencees_input():
    policy, obs, state = setup_policy()
    actions = torch.zeros(B, N, dtype=torch.long)
    changed = actions.clone()
    changed[:, 0] = 3
    extra, extra_changed = policy.extra(actions), policy.extra(changed)
    assert torch.equal(extra[:M_INFL], torch.zeros_like(extra[:M_INFL]))  # influencers see nothing
    assert not torch.equal(extra[M_INFL:], extra_changed[M_INFL:])
    start = torch.zeros(B, dtype=torch.bool)
    logits, _, _ = policy.model.step(obs, extra, state, start)
    logits_changed, _, _ = policy.model.step(obs, extra_changed, state, start)
    assert torch.equal(logits[:M_INFL], logits_changed[:M_INFL])
    assert not torch.allclose(logits[M_INFL:], logits_changed[M_INFL:])


@pytest.mark.parametrize("kind", ["kl", "jsd", "pmi"])
def test_influence_reward_matches_a_naive_recomputation(kind):
    policy, obs, state = setup_policy(kind)
    start = torch.zeros(B, dtype=torch.bool)
    sampler = torch.Generator().manual_seed(5)
    with torch.no_grad():
        actions, logprobs, values, _, influence, pairs = policy.act(obs, None, state, start, sampler)
        # the influencers' policies, read with their (always empty) influencer block
        empty = torch.zeros(N, B, policy.model.extra_size)
        speaker = torch.softmax(policy.model.step(obs, empty, state, start)[0], -1)  # [N, B, A]
        expected = torch.zeros(B, N, N, dtype=torch.float64)
        for k in range(M_INFL):
            conditionals = []
            for a in range(A):
                cf = actions.T.clone()
                cf[:, k] = a
                conditionals.append(torch.softmax(policy.model.step(obs, policy.extra(cf), state, start)[0], -1))
            cond = torch.stack(conditionals).double()  # [A, N, B, A_j]
            marginal = (speaker[k].T.double().unsqueeze(-1).unsqueeze(1) * cond).sum(0)  # [N, B, A_j]
            for j in range(M_INFL, N):
                for b in range(B):
                    p = cond[actions[k, b], j, b]
                    q = marginal[j, b]
                    if kind == "kl":
                        value = (p * (p / q).log()).sum()
                    elif kind == "jsd":
                        mix = (p + q) / 2
                        value = 0.5 * (p * (p / mix).log()).sum() + 0.5 * (q * (q / mix).log()).sum()
                    else:
                        taken = actions[j, b]
                        value = (p[taken] / q[taken]).log()
                    expected[b, k, j] = value
    torch.testing.assert_close(pairs.double(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(influence.double(), expected.sum(2), atol=1e-5, rtol=1e-4)
    assert torch.equal(pairs[:, M_INFL:], torch.zeros_like(pairs[:, M_INFL:]))
    assert torch.isfinite(influence).all()
    # the log-probabilities are those of the actions taken, under the policies actually used
    assert logprobs.shape == values.shape == (N, B)


def test_influencee_reward_adds_what_was_felt():
    policy, obs, state = setup_policy(influencee_reward=True)
    start = torch.zeros(B, dtype=torch.bool)
    with torch.no_grad():
        _, _, _, _, influence, pairs = policy.act(obs, None, state, start, torch.Generator().manual_seed(5))
    torch.testing.assert_close(influence, pairs.sum(2) + pairs.sum(1))


def test_sequence_reproduces_the_rollout_policies():
    policy, obs, state = setup_policy()
    start = torch.zeros(B, dtype=torch.bool)
    with torch.no_grad():
        actions, logprobs, values, _, _, _ = policy.act(obs, None, state, start, torch.Generator().manual_seed(5))
        logits, seq_values = policy.sequence(obs.unsqueeze(0), None, actions.T.unsqueeze(0), state, start.unsqueeze(0))
    seq_logprobs = torch.log_softmax(logits[0], -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(seq_logprobs, logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seq_values[0], values, atol=1e-5, rtol=1e-5)
