"""How each model acts in the rollout and is re-evaluated in the update.

A policy wraps the networks (``policy.model``, an ``nn.Module`` holding every trained
parameter, all with a leading agent axis) with what its model needs in the LSTM input and,
for the influence models, the causal influence reward. The trainer calls:

* ``initial_state(B, device)``: a tuple of LSTM state tensors ``[N, B, H]``;
* ``act(obs, prev_actions, visible, state, episode_start, sampler, greedy=False)`` once per
  step, without gradients: actions, their log-probabilities and values ``[N, B]``, the new
  state, ``influence [B, N]`` / ``influence_pairs [B, N, N]`` (``pairs[b, k, j]``: k's
  influence on j) for the influence models, else None, and a dict of extra per-step tensors
  ``[B, N]`` the trainer stores with the rollout (messages, for the communication models);
* ``values(obs, prev_actions, state, episode_start)``: V(s) ``[N, B]`` for bootstrapping;
* ``influence_rewards_actions``: whether the influence reward goes to the action policy
  (basic, MOA) or, in ``prepare_update(rollout, ...)``, to another head (communication);
* ``sequence(batch, state)`` in the update, on stored chunks ``[T, B, ...]`` (``obs``,
  ``prev_actions``, ``actions``, ``next_actions``, ``next_valid``, ``visible``,
  ``episode_start``): logits ``[T, N, B, A]``, values ``[T, N, B]`` and ``aux``: None or a dict
  with an extra ``loss`` (already weighted) and metrics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .influence import counterfactual_logits, divergence
from .models import AgentNetworks, BatchedLinear, ModelOfOtherAgents, reset_state, run_lstm


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
    influence_rewards_actions = False

    def __init__(self, num_agents: int, num_actions: int, visible: bool, device):
        self.num_agents, self.num_actions = num_agents, num_actions
        self.visible = visible
        others = [[j for j in range(num_agents) if j != k] for k in range(num_agents)]
        self.others = torch.tensor(others, dtype=torch.long, device=device).reshape(num_agents, num_agents - 1)
        extra_size = (num_agents - 1) * num_actions if visible else 0
        self.model = AgentNetworks(num_agents, num_actions, extra_size=extra_size).to(device)

    def initial_state(self, batch, device):
        return self.model.initial_state(batch, device)

    def extra(self, prev_actions):
        """``prev_actions [M, N] -> [N, M, E]`` or None."""
        if not self.visible:
            return None
        one_hot = F.one_hot(prev_actions, self.num_actions).float()  # [M, N, A]
        return one_hot[:, self.others].flatten(2).transpose(0, 1)

    def values(self, obs, prev_actions, state, episode_start):
        return self.model.step(obs, self.extra(prev_actions), state, episode_start)[1]

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        logits, values, state = self.model.step(obs, self.extra(prev_actions), state, episode_start)
        actions, logprobs = sample(logits, sampler, greedy)
        return actions, logprobs, values, state, None, None, {}

    def sequence(self, batch, state):
        T, B, N = batch["prev_actions"].shape
        extra = self.extra(batch["prev_actions"].reshape(T * B, N))
        if extra is not None:
            extra = extra.reshape(N, T, B, -1).transpose(0, 1)  # [T, N, B, E]
        logits, values, _ = self.model.sequence(batch["obs"], extra, state, batch["episode_start"])
        return logits, values, None


class BasicInfluence:
    """The centralised setting: influencers 0..m-1 act first; every influencee's LSTM input
    holds the influencers' actions of the same step (one-hot), and each influencer is rewarded
    with its causal influence on the influencees (Eq. 1), computed by the batched kernel.

    ``influencee_reward``: the influencees also receive the influence they felt.
    """

    influence = True
    influence_rewards_actions = True

    def __init__(self, num_agents: int, num_actions: int, influencers: int, kind: str, influencee_reward: bool,
                 device):
        if not 1 <= influencers < num_agents:
            raise ValueError(f"influencers must be between 1 and {num_agents - 1} for {num_agents} agents, got {influencers}")
        self.num_agents, self.num_actions, self.m = num_agents, num_actions, influencers
        self.kind, self.influencee_reward = kind, influencee_reward
        self.model = AgentNetworks(num_agents, num_actions, extra_size=influencers * num_actions).to(device)
        self.listens = torch.zeros(num_agents, 1, 1, device=device)
        self.listens[influencers:] = 1.0  # influencers' own block stays empty

    def initial_state(self, batch, device):
        return self.model.initial_state(batch, device)

    def values(self, obs, prev_actions, state, episode_start):
        """The influencers' actions of the next step are not drawn yet, so the influencees'
        bootstrap values are read with the influencer block empty."""
        empty = torch.zeros(self.num_agents, obs.shape[0], self.model.extra_size, device=obs.device)
        return self.model.step(obs, empty, state, episode_start)[1]

    def extra(self, actions):
        """Influencers' actions ``[M, N]`` -> ``[N, M, m * A]``, zero for the influencers themselves."""
        one_hot = F.one_hot(actions[:, :self.m], self.num_actions).float().flatten(1)  # [M, m*A]
        return one_hot.unsqueeze(0) * self.listens

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        model, m = self.model, self.m
        h, c = reset_state(state, episode_start)
        features = model.features(obs)  # [N, B, fc]
        N, B = features.shape[:2]
        # 1. influencers act (their influencer block is always empty)
        gates_empty = model.lstm_inputs(features, torch.zeros(N, B, model.extra_size, device=obs.device))
        first_logits, _ = model.heads(model.lstm.cell(gates_empty, h, c)[0])
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
        return actions, logprobs, values, (h_new, c_new), influence, pairs, {}

    def sequence(self, batch, state):
        T, B, N = batch["actions"].shape
        extra = self.extra(batch["actions"].reshape(T * B, N)).reshape(N, T, B, -1).transpose(0, 1)
        logits, values, _ = self.model.sequence(batch["obs"], extra, state, batch["episode_start"])
        return logits, values, None


class _MOANetworks(nn.Module):
    def __init__(self, num_agents, num_actions):
        super().__init__()
        self.agents = AgentNetworks(num_agents, num_actions)
        self.moa = ModelOfOtherAgents(num_agents, num_actions, self.agents.conv_features)


class ModelOfOtherAgentsInfluence:
    """The decentralised setting: each agent's own model of the other agents (MOA) predicts
    their next actions from its view and everyone's current actions; k's influence on j is the
    divergence between the MOA's prediction given k's actual action and the prediction
    marginalised over k's counterfactual actions, for j in k's view (Eq. 1 via the MOA).

    The reward belongs to the action at t (the MOA reads a_t and predicts a_{t+1}), so no
    shift is needed. The MOA is trained by cross-entropy on the actions the others actually
    took next (only for those in view if ``visible_only``), with weight ``loss_weight``.
    ``moa-baseline`` is the same with the influence weight at 0 (the MOA as an auxiliary task).
    """

    influence = True
    influence_rewards_actions = True

    def __init__(self, num_agents: int, num_actions: int, kind: str, loss_weight: float, visible_only: bool, device):
        if kind == "pmi":
            raise ValueError("the MOA models need kl or jsd: pmi needs the influencee's next action, not known yet")
        self.num_agents, self.num_actions = num_agents, num_actions
        self.kind, self.loss_weight, self.visible_only = kind, loss_weight, visible_only
        self.model = _MOANetworks(num_agents, num_actions).to(device)
        self.not_self = ~torch.eye(num_agents, dtype=torch.bool, device=device)

    def initial_state(self, batch, device):
        return (*self.model.agents.initial_state(batch, device), *self.model.agents.initial_state(batch, device))

    def values(self, obs, prev_actions, state, episode_start):
        return self.model.agents.step(obs, None, state[:2], episode_start)[1]

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        agents, moa = self.model.agents, self.model.moa
        h, c, moa_h, moa_c = reset_state(state, episode_start)
        conv = agents.conv(obs)  # [N, B, F], shared by both branches
        h_new, c_new = agents.lstm.cell(agents.lstm_inputs(agents.fc(conv), None), h, c)
        logits, values = agents.heads(h_new)
        actions, logprobs = sample(logits, sampler, greedy)  # [N, B]
        B, N, A = obs.shape[0], self.num_agents, self.num_actions
        moa_gates = moa.input_gates(conv, actions.T)  # [N, B, 4H], with a_t of every agent
        moa_h_new, moa_c_new = moa.lstm.cell(moa_gates, moa_h, moa_c)
        # counterfactuals of each agent's own action in its own MOA
        cf = counterfactual_logits(moa_gates, torch.bmm(moa_h, moa.lstm.weight_hh), moa_c, moa.action_block_weight(),
                                   actions.unsqueeze(1), moa.head.weight, moa.head.bias)  # [N_k, 1, A, B, N*A]
        cf = cf.squeeze(1).unflatten(-1, (N, A)).permute(0, 3, 1, 2, 4)  # [N_k, N_j, A~, B, A]
        speaker = torch.log_softmax(logits, -1).transpose(1, 2).unsqueeze(1).expand(N, N, A, B)
        felt = divergence(cf, speaker, actions.unsqueeze(1).expand(N, N, B), self.kind)  # [N_k, N_j, B]
        counts = visible.permute(1, 2, 0) & self.not_self.unsqueeze(-1)  # j in k's view, j != k
        pairs = (felt * counts).permute(2, 0, 1)  # [B, N_k, N_j]
        return actions, logprobs, values, (h_new, c_new, moa_h_new, moa_c_new), pairs.sum(2), pairs, {}

    def sequence(self, batch, state):
        agents, moa = self.model.agents, self.model.moa
        obs, starts = batch["obs"], batch["episode_start"]
        T, B, N = batch["actions"].shape
        conv = agents.conv(obs.reshape(T * B, *obs.shape[2:]))  # [N, T*B, F]
        gates_x = agents.lstm_inputs(agents.fc(conv), None).reshape(N, T, B, -1)
        hidden, _ = run_lstm(agents.lstm, gates_x, state[:2], starts)
        logits, values = agents.heads(hidden.reshape(N, T * B, -1))
        logits = logits.reshape(N, T, B, -1).transpose(0, 1)
        values = values.reshape(N, T, B).transpose(0, 1)
        # the MOA: predictions at t of everyone's action at t + 1
        moa_gates = moa.input_gates(conv, batch["actions"].reshape(T * B, N)).reshape(N, T, B, -1)
        moa_hidden, _ = run_lstm(moa.lstm, moa_gates, state[2:], starts)
        predicted = moa.predict(moa_hidden.reshape(N, T * B, -1))  # [N_k, T*B, N_j, A]
        loss, accuracy = self.moa_loss(predicted, batch["next_actions"].reshape(T * B, N),
                                       batch["next_valid"].reshape(T * B), batch["visible"].reshape(T * B, N, N))
        return logits, values, {"loss": self.loss_weight * loss, "moa_loss": loss.item(), "moa_accuracy": accuracy}

    def moa_loss(self, predicted, next_actions, next_valid, visible):
        """Cross-entropy of each MOA on the others' actual next actions.

        ``predicted [N_k, M, N_j, A]``, ``next_actions [M, N]``, ``next_valid [M]`` (False at
        episode ends and the rollout's last step), ``visible [M, N_k, N_j]``. Mean per agent,
        summed over agents. Returns the loss and the accuracy (a float).
        """
        N = self.num_agents
        target = next_actions.unsqueeze(0).expand(N, -1, -1)  # [N_k, M, N_j]
        ce = F.cross_entropy(predicted.permute(0, 3, 1, 2), target, reduction="none")  # [N_k, M, N_j]
        mask = next_valid.view(1, -1, 1) & self.not_self.unsqueeze(1)
        if self.visible_only:
            mask = mask & visible.permute(1, 0, 2)
        weights = mask.float()
        per_agent = (ce * weights).sum((1, 2)) / weights.sum((1, 2)).clamp(min=1.0)
        with torch.no_grad():
            correct = ((predicted.argmax(-1) == target).float() * weights).sum()
            accuracy = (correct / weights.sum().clamp(min=1.0)).item()
        return per_agent.sum(), accuracy


class _CommNetworks(nn.Module):
    def __init__(self, num_agents, num_actions, vocabulary):
        super().__init__()
        self.agents = AgentNetworks(num_agents, num_actions, extra_size=num_agents * vocabulary)
        self.message_policy = BatchedLinear(num_agents, self.agents.lstm_size, vocabulary, scale=0.01)
        self.message_value = BatchedLinear(num_agents, self.agents.lstm_size, 1)


class InfluentialCommunication:
    """Every agent also emits a discrete message (vocabulary V) from its own head, with its own
    value; all messages of step t-1 are inputs to every agent at t (one-hot). k's influence is
    that of its message m_{t-1}^k on the others' actions a_t^j (Eq. 2), over all V messages.

    The action policy and its value train on the env reward alone; the message head on
    ``alpha * e + beta * c``, where the influence c_{t+1} of the message sent at t is credited
    to it (``prepare_update``). ``comm-baseline``: the same with beta = 0.
    """

    influence = True
    influence_rewards_actions = False

    def __init__(self, num_agents, num_actions, vocabulary, kind, config, device):
        self.num_agents, self.num_actions, self.vocabulary, self.kind = num_agents, num_actions, vocabulary, kind
        self.config = config
        self.model = _CommNetworks(num_agents, num_actions, vocabulary).to(device)
        self.not_self = ~torch.eye(num_agents, dtype=torch.bool, device=device)

    def initial_state(self, batch, device):
        """(h, c, previous messages one-hot [N, B, V], their log-probabilities [N, B, V])."""
        h, c = self.model.agents.initial_state(batch, device)
        zeros = torch.zeros(self.num_agents, batch, self.vocabulary, device=device)
        return h, c, zeros, zeros.clone()

    def _extra(self, messages_one_hot):
        """Everyone's previous messages ``[N, B, V]`` -> every agent's input ``[N, B, N * V]``."""
        N, B, V = messages_one_hot.shape
        return messages_one_hot.transpose(0, 1).reshape(1, B, N * V).expand(N, B, N * V)

    def _heads(self, h):
        net = self.model
        logits, values = net.agents.heads(h)
        return logits, values, net.message_policy(h), net.message_value(h).squeeze(-1)

    def values(self, obs, prev_actions, state, episode_start):
        h, c, one_hot, _ = reset_state(state, episode_start)
        gates_x = self.model.agents.lstm_inputs(self.model.agents.features(obs), self._extra(one_hot))
        h_new, _ = self.model.agents.lstm.cell(gates_x, h, c)
        _, values, _, message_values = self._heads(h_new)
        self.last_message_values = message_values  # the message head's bootstrap, for prepare_update
        return values

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        agents, N, V = self.model.agents, self.num_agents, self.vocabulary
        h, c, one_hot, message_logprobs = reset_state(state, episode_start)
        B = obs.shape[0]
        gates_x = agents.lstm_inputs(agents.features(obs), self._extra(one_hot))
        h_new, c_new = agents.lstm.cell(gates_x, h, c)
        logits, values, message_logits, message_values = self._heads(h_new)
        actions, logprobs = sample(logits, sampler, greedy)
        messages, new_message_logprobs = sample(message_logits, sampler, greedy)
        # influence of each agent's previous message on the others' actions now
        block_weight = agents.lstm.weight_ih[:, -N * V:].reshape(N, N, V, -1)  # [N_j, N_k, V, G]
        previous = one_hot.argmax(-1)  # [N_k, B]; meaningless where nobody has spoken yet (masked)
        actual = previous.unsqueeze(0).expand(N, N, B)
        cf = counterfactual_logits(gates_x, torch.bmm(h, agents.lstm.weight_hh), c, block_weight, actual,
                                   agents.policy.weight, agents.policy.bias)  # [N_j, N_k, V, B, A]
        speaker = message_logprobs.transpose(1, 2).unsqueeze(0).expand(N, N, V, B)
        taken = actions.unsqueeze(1).expand(N, N, B)
        felt = divergence(cf, speaker, actual, self.kind, taken=taken)  # [N_j, N_k, B]
        spoke = one_hot.sum((0, 2)) > 0  # [B]: false at an episode's first step
        pairs = (felt * self.not_self.T.unsqueeze(-1)).permute(2, 1, 0) * spoke.view(B, 1, 1)  # [B, N_k, N_j]
        new_one_hot = F.one_hot(messages, V).float()
        state = (h_new, c_new, new_one_hot, torch.log_softmax(message_logits, -1))
        prev_messages = torch.where(spoke.view(1, B), previous, torch.full_like(previous, -1))
        extras = {"messages": messages.T, "prev_messages": prev_messages.T, "message_logprobs": new_message_logprobs.T,
                  "message_values": message_values.T}
        return actions, logprobs, values, state, pairs.sum(2), pairs, extras

    def prepare_update(self, rollout, beta):
        """Message rewards, advantages and returns ``[T, B, N]``: the message sent at t earns
        ``alpha * e_t + beta * c_{t+1}`` (its influence shows in the next step's actions; the
        rollout's last message gets only its own step's reward)."""
        from .algos import gae

        config = self.config
        influence = torch.zeros_like(rollout["message_values"])
        influence[:-1] = rollout["influence"][1:]
        rewards = config.extrinsic_weight * rollout["rewards"] + beta * influence
        advantages, returns = gae(rewards, rollout["message_values"], rollout["dones"], self.last_message_values.T,
                                  config.gamma, config.gae_lambda)
        return {"message_advantages": advantages, "message_returns": returns}

    def sequence(self, batch, state):
        agents, N, V = self.model.agents, self.num_agents, self.vocabulary
        obs, starts = batch["obs"], batch["episode_start"]
        T, B = obs.shape[:2]
        prev = batch["prev_messages"]  # [T, B, N], -1: none
        one_hot = F.one_hot(prev.clamp(min=0), V).float() * (prev >= 0).unsqueeze(-1).float()  # [T, B, N, V]
        extra = one_hot.reshape(T * B, N * V).unsqueeze(0).expand(N, T * B, N * V)
        gates_x = agents.lstm_inputs(agents.features(obs.reshape(T * B, *obs.shape[2:])), extra).reshape(N, T, B, -1)
        hidden, _ = run_lstm(agents.lstm, gates_x, state[:2], starts)
        logits, values, message_logits, message_values = self._heads(hidden.reshape(N, T * B, -1))

        def time_major(x):  # [N, T*B, ...] -> [T, B, N, ...]
            return x.reshape(N, T, B, *x.shape[2:]).permute(1, 2, 0, *range(3, x.dim() + 1))

        from .algos import normalise_per_agent, policy_loss_terms

        config = self.config
        advantages = batch["message_advantages"]
        if config.normalise_advantages:
            advantages = normalise_per_agent(advantages)
        terms = policy_loss_terms(time_major(message_logits), batch["messages"], batch["message_logprobs"], advantages,
                                  batch["message_returns"], time_major(message_values),
                                  clip=config.ppo_clip if config.algo == "ppo" else None,
                                  value_coef=config.value_coef, entropy_coef=config.comm_entropy_coef)
        logits = logits.reshape(N, T, B, -1).transpose(0, 1)
        values = values.reshape(N, T, B).transpose(0, 1)
        return logits, values, {"loss": config.comm_loss_weight * terms.loss, "message_policy_loss": terms.policy_loss.item(),
                                "message_entropy": terms.entropy.item()}


def make_policies(config, num_actions: int, device):
    if config.model in ("baseline", "visible"):
        return IndependentPolicies(config.agents, num_actions, config.model == "visible", device)
    if config.model == "influence":
        return BasicInfluence(config.agents, num_actions, config.influencers, config.divergence,
                              config.influencee_reward, device)
    if config.model in ("moa", "moa-baseline"):
        return ModelOfOtherAgentsInfluence(config.agents, num_actions, config.divergence, config.moa_loss_weight,
                                           config.moa_visible_only, device)
    if config.model in ("comm", "comm-baseline"):
        return InfluentialCommunication(config.agents, num_actions, config.vocabulary, config.divergence, config, device)
    raise ValueError(f"unknown model {config.model!r}")
