"""The paper's network, N independent copies evaluated for all agents in one batched call.

Per agent (Jaques et al. 2019, supplement; the reference's activations): the 15x15x3 view
scaled to [0, 1] -> conv 6x3x3 stride 1 valid + ReLU -> FC 32 + tanh -> FC 32 + tanh ->
LSTM 128 -> linear policy (A logits) and value heads. Agent k has its own weights; all
weights are stacked along a leading agent axis and evaluated with grouped convolutions and
batched matmuls, never a Python loop over agents.

Layout: tensors inside the model put the agent axis first, ``[N, M, ...]``, where M is any
flattened batch (envs, or time x envs), because that is what ``torch.bmm`` wants.

Extra LSTM inputs (``extra_size``) are concatenated to the FC output: the visible-actions
baseline feeds the one-hot previous actions of the other agents there, and the influence
models feed the one-hot actions or messages whose counterfactuals they evaluate. Their
contribution to the gates is ``extra @ W_ih[fc_size:]``, which the influence kernel uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _uniform(shape, fan_in, scale=1.0):
    bound = scale / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class BatchedLinear(nn.Module):
    """N independent linear layers: ``[N, M, in] -> [N, M, out]``."""

    def __init__(self, num_agents: int, in_size: int, out_size: int, scale: float = 1.0):
        super().__init__()
        self.weight = _uniform((num_agents, in_size, out_size), in_size, scale)
        self.bias = _uniform((num_agents, 1, out_size), in_size, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class BatchedLSTM(nn.Module):
    """N independent LSTM cells (gate order i, f, g, o as in ``torch.nn.LSTMCell``)."""

    def __init__(self, num_agents: int, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = _uniform((num_agents, input_size, 4 * hidden_size), hidden_size)
        self.weight_hh = _uniform((num_agents, hidden_size, 4 * hidden_size), hidden_size)
        self.bias = _uniform((num_agents, 1, 4 * hidden_size), hidden_size)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Input contribution to the gates, ``[N, M, in] -> [N, M, 4H]`` (bias included)."""
        return torch.baddbmm(self.bias, x, self.weight_ih)

    def cell(self, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """One step from precomputed input gates ``[N, M, 4H]`` and state ``[N, M, H]`` each."""
        gates = torch.baddbmm(gates_x, h, self.weight_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class AgentNetworks(nn.Module):
    """N copies of conv -> FC -> FC -> LSTM -> (policy, value).

    Args:
        num_agents: N. num_actions: A. extra_size: width of extra one-hot LSTM inputs (E).
    """

    def __init__(self, num_agents: int, num_actions: int, extra_size: int = 0, view_size: int = 15,
                 conv_channels: int = 6, fc_size: int = 32, lstm_size: int = 128):
        super().__init__()
        self.num_agents, self.num_actions, self.extra_size = num_agents, num_actions, extra_size
        self.lstm_size = lstm_size
        conv_out = view_size - 2
        self.conv_features = conv_channels * conv_out * conv_out
        self.conv_weight = _uniform((num_agents * conv_channels, 3, 3, 3), 27)
        self.conv_bias = _uniform((num_agents * conv_channels,), 27)
        self.fc1 = BatchedLinear(num_agents, self.conv_features, fc_size)
        self.fc2 = BatchedLinear(num_agents, fc_size, fc_size)
        self.lstm = BatchedLSTM(num_agents, fc_size + extra_size, lstm_size)
        self.policy = BatchedLinear(num_agents, lstm_size, num_actions, scale=0.01)
        self.value = BatchedLinear(num_agents, lstm_size, 1)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation features, ``obs [M, N, 15, 15, 3] uint8 -> [N, M, fc_size] float32``."""
        return self.fc(self.conv(obs))

    def fc(self, conv: torch.Tensor) -> torch.Tensor:
        """The two FC layers, ``[N, M, C*13*13] -> [N, M, fc_size]``."""
        return torch.tanh(self.fc2(torch.tanh(self.fc1(conv))))

    def conv(self, obs: torch.Tensor) -> torch.Tensor:
        """The conv layer, ``obs [M, N, 15, 15, 3] uint8 -> [N, M, C*13*13] float32``."""
        M, N, height, width = obs.shape[:4]
        # Channels-last input ([M, 15, 15, N*3] in memory) makes the grouped conv about 1.7x
        # faster on CPU than NCHW; agent k's colour channels are input channels 3k..3k+2.
        x = obs.permute(0, 2, 3, 1, 4).reshape(M, height, width, N * 3).float().mul_(1 / 255.0)
        x = F.conv2d(x.permute(0, 3, 1, 2), self.conv_weight, self.conv_bias, groups=N)
        # ReLU after the reshape to contiguous [M, N, C*13*13]: on the channels-last conv output
        # its backward takes a slow strided path.
        return F.relu(x.reshape(M, N, self.conv_features)).transpose(0, 1)  # [N, M, C*13*13]

    def lstm_inputs(self, features: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """``[N, M, fc]`` and extra ``[N, M, E]`` -> input gates ``[N, M, 4H]``."""
        x = features if extra is None else torch.cat([features, extra], dim=-1)
        return self.lstm.input_gates(x)

    def heads(self, h: torch.Tensor):
        """``h [N, M, H] -> logits [N, M, A], value [N, M]``."""
        return self.policy(h), self.value(h).squeeze(-1)

    def initial_state(self, batch: int, device=None):
        """Zero LSTM state ``(h, c)``, each ``[N, batch, H]`` float32."""
        zeros = torch.zeros(self.num_agents, batch, self.lstm_size, device=device)
        return zeros, zeros.clone()

    def step(self, obs, extra, state, episode_start):
        """One time step for a batch of envs.

        Args:
            obs: ``[B, N, 15, 15, 3] uint8``; extra: ``[N, B, E] float32`` or None;
            state: ``(h, c)`` each ``[N, B, H]``; episode_start: ``[B] bool`` (reset the state first).
        Returns:
            logits ``[N, B, A]``, value ``[N, B]``, new state.
        """
        h, c = reset_state(state, episode_start)
        gates_x = self.lstm_inputs(self.features(obs), extra)
        h, c = self.lstm.cell(gates_x, h, c)
        logits, value = self.heads(h)
        return logits, value, (h, c)

    def sequence(self, obs, extra, state, episode_start):
        """A sequence of T steps, recurrent only where it must be (the LSTM).

        Args:
            obs: ``[T, B, N, 15, 15, 3] uint8``; extra: ``[T, N, B, E]`` or None;
            state: ``(h, c)`` each ``[N, B, H]`` at the sequence start; episode_start: ``[T, B] bool``.
        Returns:
            logits ``[T, N, B, A]``, values ``[T, N, B]``, final state.
        """
        T, B = obs.shape[:2]
        N = self.num_agents
        features = self.features(obs.reshape(T * B, *obs.shape[2:]))  # [N, T*B, fc], time-major
        extra = None if extra is None else extra.transpose(0, 1).reshape(N, T * B, -1)
        gates_x = self.lstm_inputs(features, extra).reshape(N, T, B, -1)
        hidden, (h, c) = run_lstm(self.lstm, gates_x, state, episode_start)  # [N, T, B, H]
        logits, values = self.heads(hidden.reshape(N, T * B, -1))
        logits = logits.reshape(N, T, B, -1).transpose(0, 1)
        values = values.reshape(N, T, B).transpose(0, 1)
        return logits, values, (h, c)


def run_lstm(lstm: BatchedLSTM, gates_x, state, episode_start):
    """Unroll ``lstm`` over input gates ``[N, T, B, 4H]`` from ``state`` ((h, c), [N, B, H] each),
    zeroing the state before steps where ``episode_start [T, B]`` is set.
    Returns the hidden states ``[N, T, B, H]`` and the final state."""
    h, c = state
    hs = []
    # unbind once: indexing gates_x[:, t] per step would make each step's backward fill a
    # full-size zero gradient (quadratic in T).
    for t, gates_t in enumerate(gates_x.unbind(1)):
        h, c = reset_state((h, c), episode_start[t])
        h, c = lstm.cell(gates_t, h, c)
        hs.append(h)
    return torch.stack(hs, dim=1), (h, c)


def reset_state(state, episode_start):
    """Zero every state tensor (``[N, B, ...]`` each) of the envs where ``episode_start`` [B] is set."""
    keep = (~episode_start).to(state[0].dtype).view(1, -1, 1)
    return tuple(x * keep for x in state)


class ModelOfOtherAgents(nn.Module):
    """Each agent's second branch: own FC layers and LSTM on the shared conv features, with
    every agent's action at t (one-hot) in the LSTM input, predicting every agent's action at
    t + 1: ``logits [N (predictor), M, N (predicted), A]``.
    """

    def __init__(self, num_agents: int, num_actions: int, conv_features: int, fc_size: int = 32,
                 lstm_size: int = 128):
        super().__init__()
        self.num_agents, self.num_actions, self.fc_size, self.lstm_size = num_agents, num_actions, fc_size, lstm_size
        self.fc1 = BatchedLinear(num_agents, conv_features, fc_size)
        self.fc2 = BatchedLinear(num_agents, fc_size, fc_size)
        self.lstm = BatchedLSTM(num_agents, fc_size + num_agents * num_actions, lstm_size)
        self.head = BatchedLinear(num_agents, lstm_size, num_agents * num_actions)

    def input_gates(self, conv: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``conv [N, M, C*13*13]``, ``actions [M, N]`` int64 -> gates ``[N, M, 4H]``."""
        x = torch.tanh(self.fc2(torch.tanh(self.fc1(conv))))
        one_hot = F.one_hot(actions, self.num_actions).float().flatten(1)  # [M, N*A]
        return self.lstm.input_gates(torch.cat([x, one_hot.unsqueeze(0).expand(self.num_agents, -1, -1)], -1))

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """``h [N, M, H] -> logits [N, M, N, A]``."""
        return self.head(h).unflatten(-1, (self.num_agents, self.num_actions))

    def action_block_weight(self) -> torch.Tensor:
        """Each predictor's input rows for its own action: ``[N, 1, A, 4H]`` (for the kernel)."""
        rows = self.lstm.weight_ih[:, self.fc_size:].unflatten(1, (self.num_agents, self.num_actions))
        index = torch.arange(self.num_agents, device=rows.device)
        return rows[index, index].unsqueeze(1)
