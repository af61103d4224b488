"""How each model acts in the rollout and is re-evaluated in the update.

Every model is a :class:`Policy`: it wraps the networks (``policy.networks``, an ``nn.Module``
holding every trained parameter, all with a leading agent axis) with what its model needs in
the LSTM input and, for the influence models, the causal influence reward. The class
attributes say what a model can do, so the trainer, the recorder and ``evaluate`` ask the
policy instead of testing model names; :data:`POLICIES` is the one table from the names of
``Config.model`` to the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .algos import gae, normalise_per_agent, policy_loss_terms
from .influence import causal_influence
from .networks import AgentNetworks, BatchedLinear, ModelOfOtherAgents, reset_state, run_lstm


class ActOutput(NamedTuple):
    """One step of the N agents in B envs (what :meth:`Policy.act` returns).

    ``extras`` maps names to per-step tensors ``[B, N]`` that the trainer stores with the
    rollout for the update (the communication models' messages and their log-probabilities).
    """

    actions: torch.Tensor  # [N, B] int64
    logprobs: torch.Tensor  # [N, B] float32, of the actions taken
    values: torch.Tensor  # [N, B] float32
    state: tuple  # the recurrent state after the step, tensors [N, B, ...]
    influence: torch.Tensor | None  # [B, N] float32: the influence reward of each agent, or None
    influence_pairs: torch.Tensor | None  # [B, N, N] float32: pairs[b, k, j] is k's influence on j
    extras: dict


class ValueOutput(NamedTuple):
    """The bootstrap values of the state after a rollout (what :meth:`Policy.values` returns).

    ``extras``: the bootstrap values ``[B, N]`` of a policy's other heads, by name (the message
    head's ``message_values``), for :meth:`Policy.prepare_update`.
    """

    values: torch.Tensor  # [N, B] float32
    extras: dict


class Policy:
    """The protocol of every model; subclasses fill in the networks and the three passes.

    * ``initial_state(B, device)``: a tuple of LSTM state tensors ``[N, B, H]``;
    * ``act(obs, prev_actions, visible, state, episode_start, sampler, greedy=False)`` once per
      step, without gradients: an :class:`ActOutput`;
    * ``values(obs, prev_actions, state, episode_start)``: a :class:`ValueOutput`;
    * ``prepare_update(rollout, bootstrap, beta)``: extra tensors ``[T, B, N]`` for the update,
      e.g. the rewards and advantages of another head (none by default);
    * ``sequence(batch, state)`` in the update, on stored chunks ``[T, B, ...]`` (``obs``,
      ``prev_actions``, ``actions``, ``next_actions``, ``next_valid``, ``visible``,
      ``episode_start``, and what ``act`` put in ``extras``): logits ``[T, N, B, A]``, values
      ``[T, N, B]`` and ``aux``: None or a dict with an extra ``loss`` (already weighted) and
      the metrics named in ``metric_columns``.
    """

    #: ``act`` returns the influence reward (``ActOutput.influence``, ``influence_pairs``)
    computes_influence = False
    #: the influence reward enters training (False for a baseline with beta held at 0)
    rewards_influence = False
    #: the influence reward goes to the action policy (True) or to another head in
    #: ``prepare_update`` (the messages of the communication models)
    influence_rewards_actions = True
    #: ``act`` returns the message each agent sent, ``extras["messages"]`` ``[B, N]``
    logs_messages = False
    #: the update metrics ``sequence`` adds in ``aux``, in the order of the metrics columns
    metric_columns: tuple[str, ...] = ()

    networks: nn.Module

    @classmethod
    def from_config(cls, config, num_actions: int, device) -> Policy:
        raise NotImplementedError

    def initial_state(self, batch, device):
        return self.networks.initial_state(batch, device)

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False) -> ActOutput:
        raise NotImplementedError

    def values(self, obs, prev_actions, state, episode_start) -> ValueOutput:
        raise NotImplementedError

    def prepare_update(self, rollout: dict, bootstrap: ValueOutput, beta: float) -> dict:
        return {}

    def sequence(self, batch, state):
        raise NotImplementedError


def sample(logits, sampler, greedy: bool = False):
    """Actions ``[N, B]`` and their log-probabilities from logits ``[N, B, A]`` (argmax if greedy).

    Sampled by the Gumbel-max trick, ``argmax(logits + Gumbel noise)``, from ``sampler``'s
    uniforms: exactly the softmax's distribution, and cheaper on the CPU than
    ``torch.multinomial`` on the probabilities, which took 135 us of the 240 that sampling took
    per rollout step at 128 envs (now 138 in all). An action whose probability underflows to 0
    in float32 keeps its true, tiny chance and a finite log-probability."""
    logprobs_all = torch.log_softmax(logits, -1)
    if greedy:
        actions = logits.argmax(-1)
    else:
        uniform = torch.rand(logits.shape, generator=sampler, device=logits.device)
        actions = (logits - uniform.log_().neg_().log_()).argmax(-1)  # Gumbel noise: -log(-log(u))
    return actions, logprobs_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


class IndependentPolicies(Policy):
    """``baseline``: the paper's A3C/PPO baseline, no extra input."""

    visible = False  # the LSTM sees the others' previous actions (one-hot)

    @classmethod
    def from_config(cls, config, num_actions, device):
        return cls(config.agents, num_actions, device)

    def __init__(self, num_agents: int, num_actions: int, device):
        self.num_agents, self.num_actions = num_agents, num_actions
        others = [[j for j in range(num_agents) if j != k] for k in range(num_agents)]
        self.others = torch.tensor(others, dtype=torch.long, device=device).reshape(num_agents, num_agents - 1)
        extra_size = (num_agents - 1) * num_actions if self.visible else 0
        self.networks = AgentNetworks(num_agents, num_actions, extra_size=extra_size).to(device)

    def extra(self, prev_actions):
        """``prev_actions [M, N] -> [N, M, E]`` or None."""
        if not self.visible:
            return None
        one_hot = F.one_hot(prev_actions, self.num_actions).float()  # [M, N, A]
        return one_hot[:, self.others].flatten(2).transpose(0, 1)

    def values(self, obs, prev_actions, state, episode_start):
        return ValueOutput(self.networks.step(obs, self.extra(prev_actions), state, episode_start)[1], {})

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        logits, values, state = self.networks.step(obs, self.extra(prev_actions), state, episode_start)
        actions, logprobs = sample(logits, sampler, greedy)
        return ActOutput(actions, logprobs, values, state, None, None, {})

    def sequence(self, batch, state):
        T, B, N = batch["prev_actions"].shape
        extra = self.extra(batch["prev_actions"].reshape(T * B, N))
        if extra is not None:
            extra = extra.reshape(N, T, B, -1).transpose(0, 1)  # [T, N, B, E]
        logits, values, _ = self.networks.sequence(batch["obs"], extra, state, batch["episode_start"])
        return logits, values, None


class VisibleActions(IndependentPolicies):
    """``visible``: the baseline whose LSTM also sees the others' previous actions (one-hot)."""

    visible = True


class BasicInfluence(Policy):
    """The centralised setting: influencers 0..m-1 act first; every influencee's LSTM input
    holds the influencers' actions of the same step (one-hot), and each influencer is rewarded
    with its causal influence on the influencees (Eq. 1), computed by the batched kernel.

    ``influencee_reward``: the influencees also receive the influence they felt.
    """

    computes_influence = True
    rewards_influence = True

    @classmethod
    def from_config(cls, config, num_actions, device):
        return cls(config.agents, num_actions, config.influencers, config.divergence, config.influencee_reward, device)

    def __init__(self, num_agents: int, num_actions: int, influencers: int, kind: str, influencee_reward: bool,
                 device):
        if not 1 <= influencers < num_agents:
            raise ValueError(f"influencers must be between 1 and {num_agents - 1} for {num_agents} agents, got {influencers}")
        self.num_agents, self.num_actions, self.m = num_agents, num_actions, influencers
        self.kind, self.influencee_reward = kind, influencee_reward
        self.networks = AgentNetworks(num_agents, num_actions, extra_size=influencers * num_actions).to(device)
        self.listens = torch.zeros(num_agents, 1, 1, device=device)
        self.listens[influencers:] = 1.0  # influencers' own block stays empty

    def values(self, obs, prev_actions, state, episode_start):
        """The influencers' actions of the next step are not drawn yet, so the influencees'
        bootstrap values are read with the influencer block empty."""
        empty = torch.zeros(self.num_agents, obs.shape[0], self.networks.extra_size, device=obs.device)
        return ValueOutput(self.networks.step(obs, empty, state, episode_start)[1], {})

    def extra(self, actions):
        """Influencers' actions ``[M, N]`` -> ``[N, M, m * A]``, zero for the influencers themselves."""
        one_hot = F.one_hot(actions[:, :self.m], self.num_actions).float().flatten(1)  # [M, m*A]
        return one_hot.unsqueeze(0) * self.listens

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        model, m = self.networks, self.m
        h, c = reset_state(state, episode_start)
        features = model.features(obs)  # [N, B, fc]
        N, B = features.shape[:2]
        # 1. influencers act (their influencer block is always empty)
        gates_empty = model.lstm.gates(model.lstm_inputs(features, torch.zeros(N, B, model.extra_size,
                                                                                device=obs.device)), h)
        first_logits, _ = model.heads(model.lstm.activate(gates_empty, c)[0])
        influencer_actions, _ = sample(first_logits[:m], sampler, greedy)  # [m, B]
        # 2. influencees see the influencers' actions of this step: their one-hot rows of the
        # input weights join the gates (the rest of the step, recurrent part included, is shared)
        actions_so_far = torch.zeros(B, N, dtype=torch.long, device=obs.device)
        actions_so_far[:, :m] = influencer_actions.T
        extra_weight = model.lstm.weight_ih[:, -model.extra_size:]  # [N, m * A, 4H]
        gates = torch.baddbmm(gates_empty, self.extra(actions_so_far), extra_weight)
        h_new, c_new = model.lstm.activate(gates, c)
        logits, values = model.heads(h_new)  # influencer rows equal step 1's
        influencee_actions, _ = sample(logits[m:], sampler, greedy)
        actions = torch.cat([influencer_actions, influencee_actions])  # [N, B]
        logprobs = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        # 3. the influencers' causal influence on each influencee (listeners m..N-1)
        listeners = slice(m, N)
        G = gates.shape[-1]
        block_weight = model.lstm.weight_ih[listeners, -m * self.num_actions:].reshape(N - m, m, self.num_actions, G)
        actual = influencer_actions.unsqueeze(0).expand(N - m, m, B)
        speaker_logprobs = torch.log_softmax(first_logits[:m], -1).transpose(1, 2)  # [m, A, B]
        taken = actions[listeners].unsqueeze(1).expand(N - m, m, B)
        felt = causal_influence(gates[listeners], c[listeners], block_weight, actual, model.policy.weight[listeners],
                                model.policy.bias[listeners],
                                speaker_logprobs.unsqueeze(0).expand(N - m, m, self.num_actions, B), self.kind,
                                taken=taken, hidden_now=h_new[listeners]).squeeze(2)  # [N-m, m, B]: influence of k on j
        pairs = torch.zeros(B, N, N, device=obs.device)
        pairs[:, :m, m:] = felt.permute(2, 1, 0)
        influence = pairs.sum(2)  # [B, N]: what each agent exerted
        if self.influencee_reward:
            influence = influence + pairs.sum(1)  # influencees also get what they felt
        return ActOutput(actions, logprobs, values, (h_new, c_new), influence, pairs, {})

    def sequence(self, batch, state):
        T, B, N = batch["actions"].shape
        extra = self.extra(batch["actions"].reshape(T * B, N)).reshape(N, T, B, -1).transpose(0, 1)
        logits, values, _ = self.networks.sequence(batch["obs"], extra, state, batch["episode_start"])
        return logits, values, None


class _MOANetworks(nn.Module):
    def __init__(self, num_agents, num_actions):
        super().__init__()
        self.agents = AgentNetworks(num_agents, num_actions)
        self.moa = ModelOfOtherAgents(num_agents, num_actions, self.agents.conv_features)


class ModelOfOtherAgentsInfluence(Policy):
    """The decentralised setting: each agent's own model of the other agents (MOA) predicts
    their next actions from its view and everyone's current actions; k's influence on j is the
    divergence between the MOA's prediction given k's actual action and the prediction
    marginalised over k's counterfactual actions, for j in k's view (Eq. 1 via the MOA).

    The reward belongs to the action at t (the MOA reads a_t and predicts a_{t+1}), so no
    shift is needed. The MOA is trained by cross-entropy on the actions the others actually
    took next (only for those in view if ``visible_only``), with weight ``loss_weight``.
    ``moa-baseline`` (:class:`MOABaseline`) is the same with the influence weight at 0 (the MOA
    as an auxiliary task).
    """

    computes_influence = True
    rewards_influence = True
    metric_columns = ("moa_loss", "moa_accuracy")

    @classmethod
    def from_config(cls, config, num_actions, device):
        return cls(config.agents, num_actions, config.divergence, config.moa_loss_weight, config.moa_visible_only,
                   device)

    def __init__(self, num_agents: int, num_actions: int, kind: str, loss_weight: float, visible_only: bool, device):
        if kind == "pmi":
            raise ValueError("the MOA models need kl or jsd: pmi needs the influencee's next action, not known yet")
        self.num_agents, self.num_actions = num_agents, num_actions
        self.kind, self.loss_weight, self.visible_only = kind, loss_weight, visible_only
        self.networks = _MOANetworks(num_agents, num_actions).to(device)
        self.not_self = ~torch.eye(num_agents, dtype=torch.bool, device=device)

    def initial_state(self, batch, device):
        agents = self.networks.agents
        return (*agents.initial_state(batch, device), *agents.initial_state(batch, device))

    def values(self, obs, prev_actions, state, episode_start):
        return ValueOutput(self.networks.agents.step(obs, None, state[:2], episode_start)[1], {})

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        agents, moa = self.networks.agents, self.networks.moa
        h, c, moa_h, moa_c = reset_state(state, episode_start)
        fc1, moa_fc1 = agents.first_layers(obs, moa.fc1)  # [N, B, fc] each, on the shared conv
        h_new, c_new = agents.lstm.cell(agents.lstm_inputs(agents.fc_rest(fc1), None), h, c)
        logits, values = agents.heads(h_new)
        actions, logprobs = sample(logits, sampler, greedy)  # [N, B]
        N = self.num_agents
        moa_gates = moa.lstm.gates(moa.input_gates(moa_fc1, actions.T), moa_h)  # [N, B, 4H], with a_t of every agent
        moa_h_new, moa_c_new = moa.lstm.activate(moa_gates, moa_c)
        # counterfactuals of each agent's own action in its own MOA
        speaker = torch.log_softmax(logits, -1).transpose(1, 2).unsqueeze(1)  # [N_k, 1, A, B]
        counts = visible.permute(1, 2, 0) & self.not_self.unsqueeze(-1)  # [N_k, N_j, B]: j in k's view, j != k
        felt = causal_influence(moa_gates, moa_c, moa.action_block_weight(), actions.unsqueeze(1), moa.head.weight,
                                moa.head.bias, speaker, self.kind, groups=N, groups_wanted=counts,
                                hidden_now=moa_h_new).squeeze(1)  # [N_k, N_j, B]: k's MOA, its own action varied
        pairs = felt.permute(2, 0, 1)  # [B, N_k, N_j], 0 where j is out of k's view or j = k
        return ActOutput(actions, logprobs, values, (h_new, c_new, moa_h_new, moa_c_new), pairs.sum(2), pairs, {})

    def sequence(self, batch, state):
        agents, moa = self.networks.agents, self.networks.moa
        obs, starts = batch["obs"], batch["episode_start"]
        T, B, N = batch["actions"].shape
        fc1, moa_fc1 = agents.first_layers(obs.reshape(T * B, *obs.shape[2:]), moa.fc1)  # [N, T*B, fc] each
        gates_x = agents.lstm_inputs(agents.fc_rest(fc1), None).reshape(N, T, B, -1)
        hidden, _ = run_lstm(agents.lstm, gates_x, state[:2], starts)
        logits, values = agents.heads(hidden.reshape(N, T * B, -1))
        logits = logits.reshape(N, T, B, -1).transpose(0, 1)
        values = values.reshape(N, T, B).transpose(0, 1)
        # the MOA: predictions at t of everyone's action at t + 1
        moa_gates = moa.input_gates(moa_fc1, batch["actions"].reshape(T * B, N)).reshape(N, T, B, -1)
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


class MOABaseline(ModelOfOtherAgentsInfluence):
    """``moa-baseline``: the MOA as an auxiliary task; its influence is measured, not rewarded."""

    rewards_influence = False


class _CommNetworks(nn.Module):
    def __init__(self, num_agents, num_actions, vocabulary):
        super().__init__()
        self.agents = AgentNetworks(num_agents, num_actions, extra_size=num_agents * vocabulary)
        self.message_policy = BatchedLinear(num_agents, self.agents.lstm_size, vocabulary, scale=0.01)
        self.message_value = BatchedLinear(num_agents, self.agents.lstm_size, 1)


@dataclass(frozen=True)
class MessageLoss:
    """How the message head learns: on ``extrinsic_weight * e + beta * c`` with GAE(gamma,
    gae_lambda), a PPO clip (None: A2C), its value and entropy coefficients, and the weight of
    its loss in the total."""

    extrinsic_weight: float
    gamma: float
    gae_lambda: float
    normalise_advantages: bool
    clip: float | None
    value_coef: float
    entropy_coef: float
    weight: float

    @classmethod
    def from_config(cls, config) -> MessageLoss:
        return cls(config.extrinsic_weight, config.gamma, config.gae_lambda, config.normalise_advantages,
                   config.ppo_clip if config.algo == "ppo" else None, config.value_coef, config.comm_entropy_coef,
                   config.comm_loss_weight)


class InfluentialCommunication(Policy):
    """Every agent also emits a discrete message (vocabulary V) from its own head, with its own
    value; all messages of step t-1 are inputs to every agent at t (one-hot). k's influence is
    that of its message m_{t-1}^k on the others' actions a_t^j (Eq. 2), over all V messages.

    The action policy and its value train on the env reward alone; the message head on
    ``alpha * e + beta * c``, where the influence c_{t+1} of the message sent at t is credited
    to it (``prepare_update``). ``comm-baseline`` (:class:`CommBaseline`): the same with beta = 0.
    """

    computes_influence = True
    rewards_influence = True
    influence_rewards_actions = False
    logs_messages = True
    metric_columns = ("message_policy_loss", "message_entropy")

    @classmethod
    def from_config(cls, config, num_actions, device):
        return cls(config.agents, num_actions, config.vocabulary, config.divergence, MessageLoss.from_config(config),
                   device)

    def __init__(self, num_agents: int, num_actions: int, vocabulary: int, kind: str, loss: MessageLoss, device):
        self.num_agents, self.num_actions, self.vocabulary, self.kind = num_agents, num_actions, vocabulary, kind
        self.loss = loss
        self.networks = _CommNetworks(num_agents, num_actions, vocabulary).to(device)
        self.not_self = ~torch.eye(num_agents, dtype=torch.bool, device=device)

    def initial_state(self, batch, device):
        """(h, c, previous messages one-hot [N, B, V], their log-probabilities [N, B, V])."""
        h, c = self.networks.agents.initial_state(batch, device)
        zeros = torch.zeros(self.num_agents, batch, self.vocabulary, device=device)
        return h, c, zeros, zeros.clone()

    def _extra(self, messages_one_hot):
        """Everyone's previous messages ``[N, B, V]`` -> every agent's input ``[N, B, N * V]``."""
        N, B, V = messages_one_hot.shape
        return messages_one_hot.transpose(0, 1).reshape(1, B, N * V).expand(N, B, N * V)

    def _heads(self, h):
        net = self.networks
        logits, values = net.agents.heads(h)
        return logits, values, net.message_policy(h), net.message_value(h).squeeze(-1)

    def values(self, obs, prev_actions, state, episode_start):
        """The action values, and the message head's bootstrap ``extras["message_values"] [B, N]``."""
        agents = self.networks.agents
        h, c, one_hot, _ = reset_state(state, episode_start)
        gates_x = agents.lstm_inputs(agents.features(obs), self._extra(one_hot))
        h_new, _ = agents.lstm.cell(gates_x, h, c)
        _, values, _, message_values = self._heads(h_new)
        return ValueOutput(values, {"message_values": message_values.T})

    def act(self, obs, prev_actions, visible, state, episode_start, sampler, greedy=False):
        agents, N, V = self.networks.agents, self.num_agents, self.vocabulary
        h, c, one_hot, message_logprobs = reset_state(state, episode_start)
        B = obs.shape[0]
        gates = agents.lstm.gates(agents.lstm_inputs(agents.features(obs), self._extra(one_hot)), h)
        h_new, c_new = agents.lstm.activate(gates, c)
        logits, values, message_logits, message_values = self._heads(h_new)
        actions, logprobs = sample(logits, sampler, greedy)
        messages, new_message_logprobs = sample(message_logits, sampler, greedy)
        # influence of each agent's previous message on the others' actions now
        block_weight = agents.lstm.weight_ih[:, -N * V:].reshape(N, N, V, -1)  # [N_j, N_k, V, G]
        previous = one_hot.argmax(-1)  # [N_k, B]; meaningless where nobody has spoken yet (masked)
        actual = previous.unsqueeze(0).expand(N, N, B)
        speaker = message_logprobs.transpose(1, 2).unsqueeze(0).expand(N, N, V, B)
        taken = actions.unsqueeze(1).expand(N, N, B)
        spoke = one_hot.sum((0, 2)) > 0  # [B]: false at an episode's first step
        felt = causal_influence(gates, c, block_weight, actual, agents.policy.weight, agents.policy.bias, speaker,
                                self.kind, taken=taken, pairs=self.not_self,
                                groups_wanted=spoke.view(1, 1, B).expand(N, 1, B),
                                hidden_now=h_new).squeeze(2)  # [N_j, N_k, B], 0 where j = k or nobody spoke
        pairs = felt.permute(2, 1, 0)  # [B, N_k, N_j]
        new_one_hot = F.one_hot(messages, V).float()
        state = (h_new, c_new, new_one_hot, torch.log_softmax(message_logits, -1))
        prev_messages = torch.where(spoke.view(1, B), previous, torch.full_like(previous, -1))
        extras = {"messages": messages.T, "prev_messages": prev_messages.T, "message_logprobs": new_message_logprobs.T,
                  "message_values": message_values.T}
        return ActOutput(actions, logprobs, values, state, pairs.sum(2), pairs, extras)

    def prepare_update(self, rollout, bootstrap, beta):
        """Message rewards, advantages and returns ``[T, B, N]``: the message sent at t earns
        ``alpha * e_t + beta * c_{t+1}`` (its influence shows in the next step's actions; the
        rollout's last message gets only its own step's reward). ``bootstrap``: the
        :class:`ValueOutput` of the state after the rollout."""
        loss = self.loss
        influence = torch.zeros_like(rollout["message_values"])
        influence[:-1] = rollout["influence"][1:]
        rewards = loss.extrinsic_weight * rollout["rewards"] + beta * influence
        advantages, returns = gae(rewards, rollout["message_values"], rollout["dones"],
                                  bootstrap.extras["message_values"], loss.gamma, loss.gae_lambda)
        return {"message_advantages": advantages, "message_returns": returns}

    def sequence(self, batch, state):
        agents, N, V = self.networks.agents, self.num_agents, self.vocabulary
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

        loss = self.loss
        advantages = batch["message_advantages"]
        if loss.normalise_advantages:
            advantages = normalise_per_agent(advantages)
        terms = policy_loss_terms(time_major(message_logits), batch["messages"], batch["message_logprobs"], advantages,
                                  batch["message_returns"], time_major(message_values), clip=loss.clip,
                                  value_coef=loss.value_coef, entropy_coef=loss.entropy_coef)
        logits = logits.reshape(N, T, B, -1).transpose(0, 1)
        values = values.reshape(N, T, B).transpose(0, 1)
        return logits, values, {"loss": loss.weight * terms.loss, "message_policy_loss": terms.policy_loss.item(),
                                "message_entropy": terms.entropy.item()}


class CommBaseline(InfluentialCommunication):
    """``comm-baseline``: messages trained on the env reward alone (beta held at 0)."""

    rewards_influence = False


# The one table from the names of ``Config.model`` (``names.MODELS``) to the policy classes.
POLICIES: dict[str, type[Policy]] = {
    "baseline": IndependentPolicies,
    "visible": VisibleActions,
    "influence": BasicInfluence,
    "moa": ModelOfOtherAgentsInfluence,
    "moa-baseline": MOABaseline,
    "comm": InfluentialCommunication,
    "comm-baseline": CommBaseline,
}


def policy_class(model: str) -> type[Policy]:
    """The class of ``Config.model`` ``model``; ValueError for an unknown name."""
    if model not in POLICIES:
        raise ValueError(f"unknown model {model!r}; available: {', '.join(POLICIES)}")
    return POLICIES[model]


def make_policies(config, num_actions: int, device) -> Policy:
    return policy_class(config.model).from_config(config, num_actions, device)
