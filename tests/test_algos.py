"""GAE and the losses against hand-computed values; per-agent clipping; batched networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssdinfluence.algos import (
    clip_grad_norm_per_agent,
    gae,
    linear_schedule,
    normalise_per_agent,
    policy_loss_terms,
)
from ssdinfluence.networks import AgentNetworks


def test_gae_by_hand():
    # one env, one agent, T = 3, gamma = 0.5, lambda = 0.5; the episode ends after step 1.
    rewards = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    values = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    dones = torch.tensor([False, True, False]).view(3, 1)
    last_value = torch.tensor([[4.0]])
    adv, ret = gae(rewards, values, dones, last_value, gamma=0.5, lam=0.5)
    # t=2: delta = 3 + 0.5*4 - 2 = 3                      -> A2 = 3
    # t=1: delta = 2 + 0 - 1 = 1 (episode ended)          -> A1 = 1
    # t=0: delta = 1 + 0.5*1.0 - 0.5 = 1; A0 = 1 + 0.25*1 -> 1.25
    assert adv.view(-1).tolist() == [1.25, 1.0, 3.0]
    assert ret.view(-1).tolist() == [1.75, 2.0, 5.0]


def test_gae_lambda_one_is_discounted_return_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.rand(5, 2, 3), torch.rand(5, 2, 3)
    dones = torch.zeros(5, 2, dtype=torch.bool)
    last = torch.rand(2, 3)
    adv, ret = gae(rewards, values, dones, last, gamma=0.9, lam=1.0)
    expected = last.clone()
    for t in reversed(range(5)):
        expected = rewards[t] + 0.9 * expected
        torch.testing.assert_close(ret[t], expected)


def test_a2c_loss_by_hand():
    # one sample, one agent, two actions with logits (0, ln 3): p = (0.25, 0.75); action 1.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    terms = policy_loss_terms(logits, torch.tensor([1]), torch.tensor([0.0]), torch.tensor([2.0]),
                              returns=torch.tensor([1.0]), values=torch.tensor([3.0]), clip=None,
                              value_coef=0.5, entropy_coef=0.1)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert terms.policy_loss.item() == pytest.approx(-math.log(0.75) * 2.0)
    assert terms.value_loss.item() == pytest.approx(0.5 * (3.0 - 1.0) ** 2)
    assert terms.entropy.item() == pytest.approx(entropy)
    assert terms.loss.item() == pytest.approx(-math.log(0.75) * 2.0 + 0.5 * 2.0 - 0.1 * entropy)


def test_ppo_clipped_surrogate_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p(action 1) = 0.75
    actions = torch.tensor([1, 1])
    # old probabilities 0.5 and 0.25: ratios 1.5 and 3.0; advantages +1 and -1; clip 0.2
    old = torch.log(torch.tensor([0.5, 0.25]))
    adv = torch.tensor([1.0, -1.0])
    terms = policy_loss_terms(logits.view(2, 1, 2), actions.view(2, 1), old.view(2, 1), adv.view(2, 1),
                              returns=torch.zeros(2, 1), values=torch.zeros(2, 1), clip=0.2,
                              value_coef=0.0, entropy_coef=0.0)
    # sample 1: min(1.5 * 1, 1.2 * 1) = 1.2 -> -1.2 ; sample 2: min(3 * -1, 1.2 * -1) = -3 -> +3
    assert terms.policy_loss.item() == pytest.approx((-1.2 + 3.0) / 2)
    assert terms.clip_fraction.item() == pytest.approx(1.0)
    # approx KL: mean((r - 1) - log r) = ((0.5 - ln 1.5) + (2 - ln 3)) / 2
    assert terms.approx_kl.item() == pytest.approx(((0.5 - math.log(1.5)) + (2 - math.log(3.0))) / 2)


def test_losses_sum_agents_means():
    logits = torch.zeros(4, 2, 3)  # 4 samples, 2 agents, 3 actions
    terms = policy_loss_terms(logits, torch.zeros(4, 2, dtype=torch.long), None, torch.ones(4, 2),
                              returns=torch.ones(4, 2), values=torch.zeros(4, 2), clip=None,
                              value_coef=1.0, entropy_coef=0.0)
    assert terms.value_loss.item() == pytest.approx(2 * 0.5)
    assert terms.entropy.item() == pytest.approx(2 * math.log(3))


def test_huber_value_loss_is_squared_error_within_delta_and_linear_beyond():
    values = torch.tensor([[3.0], [21.0]], requires_grad=True)  # errors 2 and 20 against returns 1
    terms = policy_loss_terms(torch.zeros(2, 1, 3), torch.zeros(2, 1, dtype=torch.long), None, torch.zeros(2, 1),
                              returns=torch.ones(2, 1), values=values, clip=None, value_coef=1.0,
                              entropy_coef=0.0, huber_delta=10.0)
    # 0.5 * 2^2 = 2 inside delta; 10 * (20 - 0.5 * 10) = 150 beyond it; mean over the 2 samples
    assert terms.value_loss.item() == pytest.approx((2.0 + 150.0) / 2)
    terms.loss.backward()
    # the gradient per sample is the error, capped at delta (then / 2 for the mean)
    torch.testing.assert_close(values.grad, torch.tensor([[1.0], [5.0]]))


def test_normalise_per_agent():
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    y = normalise_per_agent(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(2))
    torch.testing.assert_close(y[:, 0], y[:, 1])


def test_clip_grad_norm_per_agent_keeps_agents_independent():
    w = torch.zeros(2, 3, requires_grad=True)        # [N, ...]
    v = torch.zeros(2 * 2, requires_grad=True)        # [N * k]
    w.grad = torch.tensor([[3.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    v.grad = torch.tensor([4.0, 0.0, 0.0, 0.0])
    norms = clip_grad_norm_per_agent([w, v], num_agents=2, max_norm=1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.1])
    assert w.grad[0].tolist() == pytest.approx([0.6, 0.0, 0.0], rel=1e-5)
    assert v.grad[:2].tolist() == pytest.approx([0.8, 0.0], rel=1e-5)
    assert w.grad[1].tolist() == pytest.approx([0.1, 0.0, 0.0])  # under the limit: untouched


def test_linear_schedule():
    assert linear_schedule(1.0, 0.0, 0.25) == 0.75
    assert linear_schedule(1.0, 0.5, 2.0) == 0.5


class SeparateNetwork(nn.Module):
    """One agent's network with standard torch layers: the obviously correct version."""

    def __init__(self, num_actions, extra_size):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc1, self.fc2 = nn.Linear(6 * 13 * 13, 32), nn.Linear(32, 32)
        self.lstm = nn.LSTMCell(32 + extra_size, 128)
        self.policy, self.value = nn.Linear(128, num_actions), nn.Linear(128, 1)

    def forward(self, obs, extra, state):
        x = torch.relu(self.conv(obs.permute(0, 3, 1, 2).float() / 255)).flatten(1)
        x = torch.tanh(self.fc2(torch.tanh(self.fc1(x))))
        if extra is not None:
            x = torch.cat([x, extra], -1)
        h, c = self.lstm(x, state)
        return self.policy(h), self.value(h).squeeze(-1), (h, c)


def copy_agent(batched: AgentNetworks, k: int, net: SeparateNetwork):
    with torch.no_grad():
        net.conv.weight.copy_(batched.conv_weight[6 * k:6 * k + 6])
        net.conv.bias.copy_(batched.conv_bias[6 * k:6 * k + 6])
        for mine, theirs in ((net.fc1, batched.fc1), (net.fc2, batched.fc2), (net.policy, batched.policy),
                             (net.value, batched.value)):
            mine.weight.copy_(theirs.weight[k].T)
            mine.bias.copy_(theirs.bias[k, 0])
        net.lstm.weight_ih.copy_(batched.lstm.weight_ih[k].T)
        net.lstm.weight_hh.copy_(batched.lstm.weight_hh[k].T)
        net.lstm.bias_ih.copy_(batched.lstm.bias[k, 0])
        net.lstm.bias_hh.zero_()


@pytest.mark.parametrize("extra_size", [0, 16])
def test_batched_networks_equal_separate_networks(extra_size):
    torch.manual_seed(0)
    N, A, T, B = 3, 9, 4, 2
    batched = AgentNetworks(N, A, extra_size=extra_size)
    separate = [SeparateNetwork(A, extra_size) for _ in range(N)]
    for k, net in enumerate(separate):
        copy_agent(batched, k, net)
    obs = torch.randint(0, 256, (T, B, N, 15, 15, 3), dtype=torch.uint8)
    extra = torch.rand(T, N, B, extra_size) if extra_size else None
    episode_start = torch.tensor([[False, False], [False, True], [False, False], [True, False]])
    h0 = torch.randn(N, B, 128)
    c0 = torch.randn(N, B, 128)
    logits, values, (h, c) = batched.sequence(obs, extra, (h0, c0), episode_start)
    (logits.square().sum() + values.sum()).backward()
    for k, net in enumerate(separate):
        state = (h0[k], c0[k])
        outs = []
        for t in range(T):
            keep = (~episode_start[t]).float().unsqueeze(-1)
            state = (state[0] * keep, state[1] * keep)
            lg, v, state = net(obs[t, :, k], None if extra is None else extra[t, k], state)
            outs.append((lg, v))
        ref_logits = torch.stack([o[0] for o in outs])
        ref_values = torch.stack([o[1] for o in outs])
        torch.testing.assert_close(logits[:, k], ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values[:, k], ref_values, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h[k], state[0], atol=1e-5, rtol=1e-5)
        (ref_logits.square().sum() + ref_values.sum()).backward()
        torch.testing.assert_close(batched.conv_weight.grad[6 * k:6 * k + 6], net.conv.weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.fc1.weight.grad[k], net.fc1.weight.grad.T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.lstm.weight_ih.grad[k], net.lstm.weight_ih.grad.T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.lstm.weight_hh.grad[k], net.lstm.weight_hh.grad.T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.policy.weight.grad[k], net.policy.weight.grad.T, atol=1e-4, rtol=1e-4)
    # one step at a time gives the same as the sequence
    state = (h0, c0)
    for t in range(T):
        lg, v, state = batched.step(obs[t], None if extra is None else extra[t], state, episode_start[t])
        torch.testing.assert_close(lg, logits[t].detach(), atol=1e-5, rtol=1e-5)
