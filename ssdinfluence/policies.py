"""How each model acts in the rollout and is re-evaluated in the update.

A policy wraps :class:`~ssdinfluence.models.AgentNetworks` with what its model needs in the
LSTM input and, for the influence models, the causal influence reward. The trainer calls:

* ``act(obs, prev_actions, state, episode_start, sampler, greedy=False)`` once per step (no gradients):
  actions, their log-probabilities and values ``[N, B]``, the new LSTM state, and
  ``influence`` ``[B, N]`` / ``influence_pairs`` ``[B, N, N]`` (``pairs[b, k, j]``: k's
  influence on j) for the influence models, else None;
* ``sequence(obs, prev_actions, actions, state, episode_start)`` in the update: logits
  ``[T, N, B, A]`` and values ``[T, N, B]`` for stored rollout chunks ``[T, B, ...]``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .influence import counterfactual_logits, divergence
from .models import AgentNetworks, reset_state


def sample(logits, sampler, greedy: bool = False):
    """Actions ``[N, B]`` and their log-probabilities from logits ``[N, B, A]`` (argmax if greedy)."""
    N, B, A = logits.shape
    logprobs_all = torch.log_softmax(logits, -1)
    if greedy:
        actions = logits.argmax(-1)
    else:
        actions = torch.multinomial(logprobs_all.exp().reshape(N * B, A), 1, generator=sampler).view(N, B)
    return actions, logprobs_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


class IndependentPolicies:
    """``baseline`` (no extra input) and ``visible`` (others' previous actions, one-hot)."""

    influence = False

    def __init__(self, num_agents: int, num_actions: int, visible: bool, device):
        self.num_agents, self.num_actions = num_agents, num_actions
        self.visible = visible
        others = [[j for j in range(num_agents) if j != k] for k in range(num_agents)]
        self.others = torch.tensor(others, dtype=torch.long, device=device).reshape(num_agents, num_agents - 1)
        self.model = AgentNetworks(num_agents, num_actions, extra_size=self.extra_size).to(device)

    @property
    def extra_size(self) -> int:
        return (self.num_agents - 1) * self.num_actions if self.visible else 0

    def extra(self, prev_actions):
        """``prev_actions [M, N] -> [N, M, E]`` or None."""
        if not self.visible:
            return None
        one_hot = F.one_hot(prev_actions, self.num_actions).float()  # [M, N, A]
        return one_hot[:, self.others].flatten(2).transpose(0, 1)

    def values(self, obs, prev_actions, state, episode_start):
        """V(s) ``[N, B]`` for bootstrapping, without sampling."""
        return self.model.step(obs, self.extra(prev_actions), state, episode_start)[1]

    def act(self, obs, prev_actions, state, episode_start, sampler, greedy=False):
        logits, values, state = self.model.step(obs, self.extra(prev_actions), state, episode_start)
        actions, logprobs = sample(logits, sampler, greedy)
        return actions, logprobs, values, state, None, None

    def sequence(self, obs, prev_actions, actions, state, episode_start):
        T, B, N = prev_actions.shape
        extra = self.extra(prev_actions.reshape(T * B, N))
        if extra is not None:
            extra = extra.reshape(N, T, B, -1).transpose(0, 1)  # [T, N, B, E]
        logits, values, _ = self.model.sequence(obs, extra, state, episode_start)
        return logits, values


class BasicInfluence:
    """The centralised setting: influencers 0..m-1 act first; every influencee's LSTM input
    holds the influencers' actions of the same step (one-hot), and each influencer is rewarded
    with its causal influence on the influencees (Eq. 1), computed by the batched kernel.

    ``influencee_reward``: the influencees also receive the influence they felt.
    """

    influence = True

    def __init__(self, num_agents: int, num_actions: int, influencers: int, kind: str, influencee_reward: bool,
                 device):
        if not 1 <= influencers < num_agents:
            raise ValueError(f"influencers must be between 1 and {num_agents - 1} for {num_agents} agents, got {influencers}")
        self.num_agents, self.num_actions, self.m = num_agents, num_actions, influencers
        self.kind, self.influencee_reward = kind, influencee_reward
        self.model = AgentNetworks(num_agents, num_actions, extra_size=influencers * num_actions).to(device)
        self.listens = torch.zeros(num_agents, 1, 1, device=device)
        self.listens[influencers:] = 1.0  # influencers' own block stays empty

    def values(self, obs, prev_actions, state, episode_start):
        """V(s) ``[N, B]`` for bootstrapping: the influencers' actions of the next step are not
        drawn yet, so the influencees' values are read with the influencer block empty."""
        N, B = obs.shape[1], obs.shape[0]
        empty = torch.zeros(N, B, self.model.extra_size, device=obs.device)
        return self.model.step(obs, empty, state, episode_start)[1]

    def extra(self, actions):
        """Influencers' actions ``[M, N]`` -> ``[N, M, m * A]``, zero for the influencers themselves."""
        one_hot = F.one_hot(actions[:, :self.m], self.num_actions).float().flatten(1)  # [M, m*A]
        return one_hot.unsqueeze(0) * self.listens

    def act(self, obs, prev_actions, state, episode_start, sampler, greedy=False):
        model, m = self.model, self.m
        h, c = reset_state(state, episode_start)
        features = model.features(obs)  # [N, B, fc]
        N, B = features.shape[:2]
        # 1. influencers act (their influencer block is always empty)
        gates_empty = model.lstm_inputs(features, torch.zeros(N, B, model.extra_size, device=obs.device))
        h_first, c_first = model.lstm.cell(gates_empty, h, c)
        first_logits, first_values = model.heads(h_first)
        influencer_actions, _ = sample(first_logits[:m], sampler, greedy)  # [m, B]
        # 2. influencees see the influencers' actions of this step
        actions_so_far = torch.zeros(B, N, dtype=torch.long, device=obs.device)
        actions_so_far[:, :m] = influencer_actions.T
        gates_x = model.lstm_inputs(features, self.extra(actions_so_far))
        h_new, c_new = model.lstm.cell(gates_x, h, c)
        logits, values = model.heads(h_new)  # influencer rows equal step 1's
        influencee_actions, _ = sample(logits[m:], sampler, greedy)
        actions = torch.cat([influencer_actions, influencee_actions])  # [N, B]
        logprobs = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        # 3. the influencers' causal influence on each influencee (listeners m..N-1)
        listeners = slice(m, N)
        G = gates_x.shape[-1]
        block_weight = model.lstm.weight_ih[listeners, -m * self.num_actions:].reshape(N - m, m, self.num_actions, G)
        actual = influencer_actions.unsqueeze(0).expand(N - m, m, B)
        cf_logits = counterfactual_logits(gates_x[listeners], torch.bmm(h[listeners], model.lstm.weight_hh[listeners]),
                                          c[listeners], block_weight, actual, model.policy.weight[listeners],
                                          model.policy.bias[listeners])  # [N-m, m, A, B, A]
        speaker_logprobs = torch.log_softmax(first_logits[:m], -1).transpose(1, 2)  # [m, A, B]
        taken = actions[listeners].unsqueeze(1).expand(N - m, m, B)
        felt = divergence(cf_logits, speaker_logprobs.unsqueeze(0).expand(N - m, m, self.num_actions, B), actual,
                          self.kind, taken=taken)  # [N-m, m, B]: influence of k on j
        pairs = torch.zeros(B, N, N, device=obs.device)
        pairs[:, :m, m:] = felt.permute(2, 1, 0)
        influence = pairs.sum(2)  # [B, N]: what each agent exerted
        if self.influencee_reward:
            influence = influence + pairs.sum(1)  # influencees also get what they felt
        return actions, logprobs, values, (h_new, c_new), influence, pairs

    def sequence(self, obs, prev_actions, actions, state, episode_start):
        T, B, N = actions.shape
        extra = self.extra(actions.reshape(T * B, N)).reshape(N, T, B, -1).transpose(0, 1)
        logits, values, _ = self.model.sequence(obs, extra, state, episode_start)
        return logits, values


def make_policies(config, num_actions: int, device):
    if config.model in ("baseline", "visible"):
        return IndependentPolicies(config.agents, num_actions, config.model == "visible", device)
    if config.model == "influence":
        return BasicInfluence(config.agents, num_actions, config.influencers, config.divergence,
                              config.influencee_reward, device)
    raise ValueError(f"unknown model {config.model!r}")
