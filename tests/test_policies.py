"""Basic influence: influencers act first, influencees see their actions, the reward is Eq. 1."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ssdinfluence.config import build_config
from ssdinfluence.influence import divergence
from ssdinfluence.names import MODELS
from ssdinfluence.policies import (
    POLICIES,
    ActOutput,
    BasicInfluence,
    ModelOfOtherAgentsInfluence,
    Policy,
    ValueOutput,
    make_policies,
)
from ssdinfluence.train import _next_actions

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
    logits, _, _ = policy.networks.step(obs, extra, state, start)
    logits_changed, _, _ = policy.networks.step(obs, extra_changed, state, start)
    assert torch.equal(logits[:M_INFL], logits_changed[:M_INFL])
    assert not torch.allclose(logits[M_INFL:], logits_changed[M_INFL:])


@pytest.mark.parametrize("kind", ["kl", "jsd", "pmi"])
def test_influence_reward_matches_a_naive_recomputation(kind):
    policy, obs, state = setup_policy(kind)
    start = torch.zeros(B, dtype=torch.bool)
    sampler = torch.Generator().manual_seed(5)
    with torch.no_grad():
        actions, logprobs, values, _, influence, pairs, _ = policy.act(obs, None, None, state, start, sampler)
        # the influencers' policies, read with their (always empty) influencer block
        empty = torch.zeros(N, B, policy.networks.extra_size)
        speaker = torch.softmax(policy.networks.step(obs, empty, state, start)[0], -1)  # [N, B, A]
        expected = torch.zeros(B, N, N, dtype=torch.float64)
        for k in range(M_INFL):
            conditionals = []
            for a in range(A):
                cf = actions.T.clone()
                cf[:, k] = a
                conditionals.append(torch.softmax(policy.networks.step(obs, policy.extra(cf), state, start)[0], -1))
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
        _, _, _, _, influence, pairs, _ = policy.act(obs, None, None, state, start, torch.Generator().manual_seed(5))
    torch.testing.assert_close(influence, pairs.sum(2) + pairs.sum(1))


def test_sequence_reproduces_the_rollout_policies():
    policy, obs, state = setup_policy()
    start = torch.zeros(B, dtype=torch.bool)
    with torch.no_grad():
        actions, logprobs, values, _, _, _, _ = policy.act(obs, None, None, state, start, torch.Generator().manual_seed(5))
        batch = {"obs": obs.unsqueeze(0), "actions": actions.T.unsqueeze(0), "episode_start": start.unsqueeze(0)}
        logits, seq_values, _ = policy.sequence(batch, state)
    seq_logprobs = torch.log_softmax(logits[0], -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(seq_logprobs, logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seq_values[0], values, atol=1e-5, rtol=1e-5)


def setup_moa(visible_only=True, kind="kl"):
    torch.manual_seed(1)
    policy = ModelOfOtherAgentsInfluence(N, A, kind=kind, loss_weight=1.0, visible_only=visible_only, device="cpu")
    obs = torch.randint(0, 256, (B, N, 15, 15, 3), dtype=torch.uint8)
    state = tuple(torch.randn(N, B, 128) for _ in range(4))
    return policy, obs, state


def test_moa_influence_matches_rerunning_the_moa():
    policy, obs, state = setup_moa()
    visible = torch.ones(B, N, N, dtype=torch.bool)
    visible[0, 0, 2] = False  # agent 2 out of agent 0's view in env 0
    start = torch.zeros(B, dtype=torch.bool)
    moa, agents = policy.networks.moa, policy.networks.agents
    with torch.no_grad():
        actions, _, _, _, influence, pairs, _ = policy.act(obs, None, visible, state, start, torch.Generator().manual_seed(2))
        moa_fc1 = agents.first_layers(obs, moa.fc1)[1]
        speaker_logits, _, _ = agents.step(obs, None, state[:2], start)
        expected = torch.zeros(B, N, N)
        for k in range(N):
            per_value = []
            for a in range(A):
                cf = actions.T.clone()
                cf[:, k] = a
                h, _ = moa.lstm.cell(moa.input_gates(moa_fc1, cf), state[2], state[3])
                per_value.append(moa.predict(h)[k])  # [B, N_j, A]
            cf_logits = torch.stack(per_value).permute(2, 0, 1, 3)  # [N_j, A~, B, A]
            speaker = torch.log_softmax(speaker_logits[k], -1).T.unsqueeze(0).expand(N, A, B)
            felt = divergence(cf_logits, speaker, actions[k].unsqueeze(0).expand(N, B), "kl")  # [N_j, B]
            expected[:, k] = felt.T
    expected = expected * visible * ~torch.eye(N, dtype=torch.bool)
    torch.testing.assert_close(pairs, expected, atol=1e-5, rtol=1e-4)
    assert pairs[0, 0, 2] == 0 and torch.all(pairs.diagonal(dim1=1, dim2=2) == 0)
    torch.testing.assert_close(influence, expected.sum(2), atol=1e-5, rtol=1e-4)


def test_next_action_targets_are_shifted_by_one_step():
    actions = torch.arange(4 * 2 * 3).reshape(4, 2, 3)
    done = torch.zeros(4, 2, dtype=torch.bool)
    done[1, 0] = True  # env 0's episode ends with step 1
    targets = _next_actions(actions, done)
    assert torch.equal(targets["next_actions"][:3], actions[1:])
    assert targets["next_valid"].tolist() == [[True, True], [False, True], [True, True], [False, False]]


def moa_batch(policy, T=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, A, (T, B, N), generator=generator)
    actions[:, :, 1] = actions[:, :, 0]  # agent 1 copies agent 0's action: predictable
    done = torch.zeros(T, B, dtype=torch.bool)
    visible = torch.ones(T, B, N, N, dtype=torch.bool)
    batch = {"obs": torch.randint(0, 256, (T, B, N, 15, 15, 3), dtype=torch.uint8, generator=generator),
             "actions": actions, "episode_start": torch.zeros(T, B, dtype=torch.bool), "visible": visible,
             **_next_actions(actions, done)}
    return batch


def test_moa_weights_change_and_its_loss_falls_on_a_fixed_batch():
    policy, _, _ = setup_moa(visible_only=False)
    batch = moa_batch(policy)
    state = policy.initial_state(B, "cpu")
    moa_params = list(policy.networks.moa.parameters())
    before = [p.detach().clone() for p in moa_params]
    optimizer = torch.optim.Adam(policy.networks.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        _, _, aux = policy.sequence(batch, state)
        optimizer.zero_grad()
        aux["loss"].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in moa_params)  # it trains
        optimizer.step()
        losses.append(aux["moa_loss"])
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, moa_params, strict=True))


def test_moa_loss_ignores_agents_out_of_view_and_invalid_steps():
    policy, _, _ = setup_moa(visible_only=True)
    M = 3
    predicted = torch.randn(N, M, N, A)
    next_actions = torch.randint(0, A, (M, N))
    visible = torch.ones(M, N, N, dtype=torch.bool)
    base, _ = policy.moa_loss(predicted, next_actions, torch.tensor([True, True, False]), visible)
    changed = predicted.clone()
    changed[:, 2] += 100 * torch.randn(N, N, A)  # the invalid step
    visible[:, 0, 3] = False
    changed[0, :, 3] += 100 * torch.randn(M, A)  # out of agent 0's view
    after, _ = policy.moa_loss(changed, next_actions, torch.tensor([True, True, False]), visible)
    base_masked, _ = policy.moa_loss(predicted, next_actions, torch.tensor([True, True, False]), visible)
    torch.testing.assert_close(after, base_masked)
    assert not torch.isclose(base, base_masked)


def setup_comm(kind="kl"):
    from ssdinfluence.policies import InfluentialCommunication, MessageLoss

    torch.manual_seed(3)
    config = build_config({"model": "comm", "agents": N})
    policy = InfluentialCommunication(N, A, vocabulary=5, kind=kind, loss=MessageLoss.from_config(config), device="cpu")
    obs = torch.randint(0, 256, (B, N, 15, 15, 3), dtype=torch.uint8)
    return policy, obs


def test_messages_reach_the_others_at_the_next_step():
    policy, obs = setup_comm()
    start = torch.zeros(B, dtype=torch.bool)
    sampler = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = policy.initial_state(B, "cpu")
        _, _, _, state, influence, _, extras = policy.act(obs, None, None, state, torch.ones(B, dtype=torch.bool), sampler)
        assert torch.all(extras["prev_messages"] == -1) and torch.all(influence == 0)  # nobody spoke yet
        sent = extras["messages"]  # [B, N]
        assert torch.equal(state[2].argmax(-1).T, sent)
        # the next step's input of every agent holds every message just sent
        extra = policy._extra(state[2])  # [N, B, N*V]
        assert torch.equal(extra[2].reshape(B, N, 5).argmax(-1), sent)
        changed = state[2].clone()
        changed[0] = torch.roll(changed[0], 1, dims=-1)  # agent 0 said something else
        logits_a = policy.networks.agents.step(obs, policy._extra(state[2]), state[:2], start)[0]
        logits_b = policy.networks.agents.step(obs, policy._extra(changed), state[:2], start)[0]
        assert not torch.allclose(logits_a[1:], logits_b[1:])
        _, _, _, _, _, _, extras = policy.act(obs, None, None, state, start, sampler)
        assert torch.equal(extras["prev_messages"], sent)


@pytest.mark.parametrize("kind", ["kl", "pmi"])
def test_message_influence_matches_a_naive_recomputation(kind):
    policy, obs = setup_comm(kind)
    V = 5
    start = torch.zeros(B, dtype=torch.bool)
    sampler = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = policy.initial_state(B, "cpu")
        _, _, _, state, _, _, _ = policy.act(obs, None, None, state, torch.ones(B, dtype=torch.bool), sampler)
        actions, _, _, _, influence, pairs, _ = policy.act(obs, None, None, state, start, sampler)
        h, c, one_hot, speaker = state
        expected = torch.zeros(B, N, N)
        for k in range(N):
            conditionals = []
            for m in range(V):
                cf = one_hot.clone()
                cf[k] = F.one_hot(torch.full((B,), m), V).float()
                conditionals.append(policy.networks.agents.step(obs, policy._extra(cf), (h, c), start)[0])
            cf_logits = torch.stack(conditionals).permute(1, 0, 2, 3)  # [N_j, V, B, A]
            actual = one_hot[k].argmax(-1).unsqueeze(0).expand(N, B)
            felt = divergence(cf_logits, speaker[k].T.unsqueeze(0).expand(N, V, B), actual, kind, taken=actions)
            expected[:, k] = felt.T
        expected *= ~torch.eye(N, dtype=torch.bool)
    torch.testing.assert_close(pairs, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(influence, expected.sum(2), atol=1e-5, rtol=1e-4)


def test_message_reward_is_credited_to_the_message_that_caused_it():
    policy, _ = setup_comm()
    T = 3
    bootstrap = ValueOutput(torch.zeros(N, B), {"message_values": torch.zeros(B, N)})
    rollout = {"message_values": torch.zeros(T, B, N), "influence": torch.zeros(T, B, N),
               "rewards": torch.zeros(T, B, N), "dones": torch.zeros(T, B, dtype=torch.bool)}
    rollout["influence"][2, 0, 1] = 1.0  # agent 1's message of step 1 influenced step 2
    out = policy.prepare_update(rollout, bootstrap, beta=2.0)
    gamma, lam = policy.loss.gamma, policy.loss.gae_lambda
    assert out["message_returns"][1, 0, 1].item() == pytest.approx(2.0)
    # values are zero, so the lambda-return equals the advantage: gamma * lambda * 2 one step earlier
    assert out["message_advantages"][0, 0, 1].item() == pytest.approx(gamma * lam * 2.0)
    torch.testing.assert_close(out["message_returns"], out["message_advantages"])
    assert out["message_returns"][2].abs().sum() == 0


@pytest.mark.parametrize("model", MODELS)
def test_each_policy_does_what_its_class_attributes_say(model):
    """The trainer, the recorder and evaluate trust these attributes instead of model names."""
    torch.manual_seed(0)
    n, T = 3, 2
    policy = make_policies(build_config({"model": model, "agents": n}), A, "cpu")
    assert type(policy) is POLICIES[model] and isinstance(policy, Policy)
    assert policy.computes_influence or not policy.rewards_influence
    sampler = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (T, B, n, 15, 15, 3), dtype=torch.uint8)
    visible = torch.ones(T, B, n, n, dtype=torch.bool)
    start = torch.zeros(T, B, dtype=torch.bool)
    start[0] = True
    first_state = state = policy.initial_state(B, "cpu")
    prev, steps = torch.zeros(B, n, dtype=torch.long), []
    with torch.no_grad():
        for t in range(T):
            step = policy.act(obs[t], prev, visible[t], state, start[t], sampler)
            assert isinstance(step, ActOutput)
            assert step.actions.shape == step.logprobs.shape == step.values.shape == (n, B)
            assert (step.influence is not None) == (step.influence_pairs is not None) == policy.computes_influence
            if policy.computes_influence:
                assert step.influence.shape == (B, n) and step.influence_pairs.shape == (B, n, n)
            assert ("messages" in step.extras) == policy.logs_messages
            assert all(x.shape[:2] == (B, n) for x in step.extras.values())
            steps.append(step)
            state, prev = step.state, step.actions.T
        bootstrap = policy.values(obs[-1], prev, state, torch.zeros(B, dtype=torch.bool))
    assert isinstance(bootstrap, ValueOutput) and bootstrap.values.shape == (n, B)
    actions = torch.stack([s.actions.T for s in steps])  # [T, B, n]
    done = torch.zeros(T, B, dtype=torch.bool)
    batch = {"obs": obs, "prev_actions": torch.cat([torch.zeros_like(actions[:1]), actions[:-1]]), "actions": actions,
             "episode_start": start, "visible": visible, **_next_actions(actions, done),
             **{name: torch.stack([s.extras[name] for s in steps]) for name in steps[0].extras}}
    influence = torch.stack([s.influence for s in steps]) if policy.computes_influence else torch.zeros(T, B, n)
    batch.update(policy.prepare_update({**batch, "influence": influence, "rewards": torch.zeros(T, B, n),
                                        "dones": done}, bootstrap, beta=1.0))
    logits, values, aux = policy.sequence(batch, first_state)
    assert logits.shape == (T, n, B, A) and values.shape == (T, n, B)
    assert set(aux or {}) - {"loss"} == set(policy.metric_columns)


def test_sampled_actions_follow_the_softmax_and_their_log_probabilities():
    """Gumbel-max sampling: per row, the action frequencies match the softmax (within 5 standard
    errors over 20,000 draws), a near-impossible action stays possible in principle but is never
    drawn here, and the returned log-probabilities are the log-softmax's at the actions."""
    from ssdinfluence.policies import sample

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 3.0, -200.0, 0.0]]).reshape(1, 2, 4)
    draws = 20_000
    sampler = torch.Generator().manual_seed(1)
    rows = logits[0].repeat_interleave(draws, 0).unsqueeze(0)  # [1, 2 * draws, 4]: row 0's draws, then row 1's
    actions, logprobs = sample(rows, sampler)
    actions = actions.view(2, draws)
    probs = torch.softmax(logits[0], -1)
    for row in range(2):
        freq = torch.bincount(actions[row], minlength=4).double() / draws
        tolerance = 5 * (probs[row].double() * (1 - probs[row].double()) / draws).sqrt() + 1e-12
        assert ((freq - probs[row].double()).abs() <= tolerance).all(), (row, freq, probs[row])
    assert not (actions[1] == 2).any()
    torch.testing.assert_close(logprobs.view(2, draws), torch.log_softmax(logits[0], -1).gather(1, actions))
    greedy, _ = sample(logits, sampler, greedy=True)
    assert greedy.tolist() == [[2, 0]]
