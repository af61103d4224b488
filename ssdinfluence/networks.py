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

Two hand-written autograd functions carry most of the work (``tests/test_kernels.py`` checks
their outputs and gradients against the plain compositions of torch ops they replace):

* :class:`_ConvReLU`, the conv layer and its ReLU, with a backward that gives only the weight
  and bias gradients: Numba kernels on the CPU (:mod:`ssdinfluence.conv_cpu`), elsewhere one
  channels-last grouped convolution with the ReLU fused into the copy that puts its output
  agent-major (the composition of standard ops pays two extra layout conversions and a
  strided ReLU backward).
* :class:`_LSTMSequence`, the LSTM unrolled over a sequence: per step one matmul and the
  element-wise work (on the CPU one Numba kernel, :mod:`ssdinfluence.lstm_cpu`); the backward
  walks back through time with one matmul and one kernel per step and computes the recurrent
  weight's gradient in one matmul over all steps, instead of autograd's dozen small nodes per
  step. The rollout's single steps use the same kernel (:meth:`BatchedLSTM.activate`).
"""

from __future__ import annotations

import math

import numba
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from . import conv_cpu, lstm_cpu, threads


def _uniform(shape, fan_in, scale=1.0):
    bound = scale / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def tanh(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.tanh`` as ``2 sigmoid(2x) - 1`` on the CPU (equal to within 2e-7): there torch's
    float32 tanh takes about 10x as long as its sigmoid (2.4 vs 0.24 ns per element with the
    AVX-512 kernels), and the four cheap passes about 5x less than one tanh. ``out``: write
    there (no autograd). Elsewhere (CUDA) it is ``torch.tanh``."""
    if x.device.type != "cpu":
        return torch.tanh(x, out=out)
    if out is None and x.requires_grad and torch.is_grad_enabled():
        return _Tanh.apply(x)
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """In-place :func:`tanh` (no autograd)."""
    if x.device.type != "cpu":
        return x.tanh_()
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


class _Tanh(torch.autograd.Function):
    """:func:`tanh` under autograd; the backward is torch's own, from the output."""

    @staticmethod
    def forward(ctx, x):
        y = torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return torch.ops.aten.tanh_backward(grad, ctx.saved_tensors[0])


class BatchedLinear(nn.Module):
    """N independent linear layers: ``[N, M, in] -> [N, M, out]``."""

    def __init__(self, num_agents: int, in_size: int, out_size: int, scale: float = 1.0):
        super().__init__()
        self.weight = _uniform((num_agents, in_size, out_size), in_size, scale)
        self.bias = _uniform((num_agents, 1, out_size), in_size, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, matmul_weight(self.weight))


class ConvFeaturesLinear(BatchedLinear):
    """The first FC layer, on the conv's features ``[N, M, C*P]`` in (channel, pixel) order, the
    order of a flattened NCHW conv output: :func:`wide_linear`'s matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wide_linear(x, self.weight, self.bias)


class DerivedWeight:
    """A tensor made from parameters (a re-layout of weights), made again only when one of them
    has changed: in passes without gradients (the rollout) the same value serves every step
    until the optimiser's step or ``load_state_dict`` writes the parameters (each in-place write
    advances a tensor's version counter; a new tensor or storage, e.g. after ``.to()``, also
    counts as a change). With gradients on it is made afresh, inside the autograd graph.
    For the MOA a rollout step spent about a fifth of its time re-laying out the first layers'
    weights (1,014 x 64 floats per agent) that only change between rollouts."""

    def __init__(self):
        self.sources, self.key, self.value = (), (), None

    def get(self, sources: tuple, make) -> torch.Tensor:
        if torch.is_grad_enabled() and any(x.requires_grad for x in sources):
            return make()
        key = tuple((id(x), x._version, x.data_ptr()) for x in sources)  # ids stay unique: sources are held
        if self.value is None or key != self.key:
            self.sources, self.key, self.value = sources, key, make()
        return self.value


def wide_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x [N, M, in] @ weight [N, in, out] + bias [N, 1, out]`` for wide inputs and narrow
    outputs (the conv's 1,014 features into 32 units), with a backward that multiplies by a
    contiguous copy of the small transposed weight: autograd's own ``grad @ weight.mT`` on the
    transposed view takes MKL 2.4x as long for this shape (19 vs 8 ms for a minibatch)."""
    return _WideLinear.apply(x, weight, bias)


class _WideLinear(torch.autograd.Function):
    """See :func:`wide_linear`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias, x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight.transpose(1, 2).contiguous()) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad.transpose(1, 2), x).transpose(1, 2)  # [N, out, in] then a view: faster
        return grad_x, grad_weight, grad.sum(1, keepdim=True)


def matmul_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight [N, in, out]`` as the right operand of a bmm: for narrow outputs (the heads) the
    same values stored output-major, which MKL's matmul takes about 2x faster."""
    if weight.shape[-1] > NARROW:
        return weight
    return weight.transpose(1, 2).contiguous().transpose(1, 2)


NARROW = 16  # output widths up to this take the output-major layout (measured: 9 wide 2x, 32 wide no gain)


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
        return self.activate(self.gates(gates_x, h), c)

    def gates(self, gates_x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The gate pre-activations ``[N, M, 4H]``: the input part plus ``h @ W_hh``."""
        return torch.baddbmm(gates_x, h, self.weight_hh)

    @staticmethod
    def activate(gates: torch.Tensor, c: torch.Tensor):
        """``(h, c)`` after the step from the pre-activations ``[N, M, 4H]`` and ``c [N, M, H]``.
        Without gradients on the CPU one Numba kernel (:mod:`ssdinfluence.lstm_cpu`)."""
        if lstm_cpu.applies(gates) and not (torch.is_grad_enabled() and (gates.requires_grad or c.requires_grad)):
            h, c_new = torch.empty_like(c), torch.empty_like(c)
            with threads.for_envs(gates.shape[0] * gates.shape[1], per_thread=CELL_ROWS_PER_THREAD):
                lstm_cpu.cell_forward(gates.contiguous().numpy(), c.contiguous().numpy(), h.numpy(), c_new.numpy())
            return h, c_new
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * tanh(g)
        h = torch.sigmoid(o) * tanh(c)
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
        self.fc1 = ConvFeaturesLinear(num_agents, self.conv_features, fc_size)
        self.fc2 = BatchedLinear(num_agents, fc_size, fc_size)
        self.lstm = BatchedLSTM(num_agents, fc_size + extra_size, lstm_size)
        self.policy = BatchedLinear(num_agents, lstm_size, num_actions, scale=0.01)
        self.value = BatchedLinear(num_agents, lstm_size, 1)
        self._first_layers = DerivedWeight()  # first_layers' weights side by side, and biases

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation features, ``obs [M, N, 15, 15, 3] uint8 -> [N, M, fc_size] float32``."""
        return self.fc(self.conv(obs))

    def fc(self, conv: torch.Tensor) -> torch.Tensor:
        """The two FC layers, ``[N, M, C*13*13] -> [N, M, fc_size]``."""
        return self.fc_rest(self.fc1(conv))

    def fc_rest(self, fc1: torch.Tensor) -> torch.Tensor:
        """The FC stack after fc1's matmul: ``[N, M, fc_size]`` pre-activation -> features."""
        return tanh(self.fc2(tanh(fc1)))

    def first_layers(self, obs: torch.Tensor, *others: ConvFeaturesLinear) -> tuple[torch.Tensor, ...]:
        """The conv and, on its features, fc1 and other first FC layers (the MOA's) in one matmul
        (their weights side by side): ``obs [M, N, 15, 15, 3] uint8 ->`` one ``[N, M, out]``
        pre-activation per layer. One matmul instead of one per layer also makes the backward
        one matmul into the 20 MB features of a minibatch, not one per layer and their sum."""
        layers = (self.fc1, *others)
        weight, bias = self._first_layers.get(
            tuple(x for layer in layers for x in (layer.weight, layer.bias)),
            lambda: (torch.cat([layer.weight for layer in layers], -1),
                     torch.cat([layer.bias for layer in layers], -1)))
        out = wide_linear(self.conv(obs), weight, bias)
        return out.split([layer.weight.shape[-1] for layer in layers], -1)

    def conv(self, obs: torch.Tensor) -> torch.Tensor:
        """The conv layer, ``obs [M, N, 15, 15, 3] uint8 -> [N, M, C*13*13] float32``, features in
        (channel, row, col) order (:class:`ConvFeaturesLinear` reads them)."""
        return _ConvReLU.apply(obs, self.conv_weight, self.conv_bias)

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
    keep = (~episode_start).to(gates_x.dtype)
    hidden, h, c = _LSTMSequence.apply(gates_x, state[0], state[1], keep, lstm.weight_hh)
    return hidden, (h, c)


_SCALE = 1 / 255.0  # uint8 colours -> [0, 1], folded into the conv weight


class _ConvReLU(torch.autograd.Function):
    """``relu(conv(obs / 255))`` for N agents at once: ``obs [M, N, 15, 15, 3] uint8``, weight
    ``[N*C, 3, 3, 3]``, bias ``[N*C]`` -> ``[N, M, C*13*13]`` float in (channel, row, col) order.

    On the CPU (with Numba's JIT on, and the paper's filter shape) the kernels of
    :mod:`ssdinfluence.conv_cpu`: 4x faster than oneDNN's grouped conv forward and 5x its
    backward for a minibatch, and more accurate in float32 (the weight gradient sums chunks of
    images apart). Elsewhere (CUDA) one channels-last grouped conv, agent k's colours as
    channels 3k..3k+2; the ReLU rides on the copy that puts its output agent-major.
    """

    @staticmethod
    def forward(ctx, obs, weight, bias):
        M, N, height, width, colours = obs.shape
        C = weight.shape[0] // N
        ctx.numba = obs.device.type == "cpu" and not numba.config.DISABLE_JIT and conv_cpu.supports(weight.shape, N)
        if ctx.numba:
            out = torch.empty((N, M, (height - 2) * (width - 2) * C), dtype=weight.dtype)
            with threads.for_envs(M * N, per_thread=IMAGES_PER_THREAD):
                conv_cpu.conv_relu_forward(obs.contiguous().numpy(), (weight.detach() * _SCALE).numpy(),
                                           bias.detach().numpy(), out.numpy())
            ctx.save_for_backward(obs, weight, out)
            return out
        # the layout change on the bytes, then the cast: 2-3x faster than both in one strided copy
        x = obs.permute(0, 2, 3, 1, 4).contiguous().to(weight.dtype)  # [M, 15, 15, N, 3]
        x = x.view(M, height, width, N * colours).permute(0, 3, 1, 2)  # [M, N*3, 15, 15] channels-last
        y = F.conv2d(x, weight * _SCALE, bias, groups=N)  # [M, N*C, 13, 13] channels-last
        pixels = y.shape[2] * y.shape[3]
        out = torch.empty((N, M, C, pixels), dtype=y.dtype, device=obs.device)
        y_memory = y.permute(0, 2, 3, 1).view(M, pixels, N, C)  # the channels-last output as it lies
        torch.clamp_min(y_memory.permute(2, 0, 3, 1), 0.0, out=out)  # ReLU and the layout change at once
        ctx.save_for_backward(x, weight, out)
        ctx.rows = y.shape[2]
        return out.view(N, M, -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if ctx.numba:
            obs, weight, out = ctx.saved_tensors
            grad_weight, grad_bias = torch.empty_like(weight), torch.empty(weight.shape[0], dtype=weight.dtype)
            with threads.for_envs(obs.shape[0] * obs.shape[1], per_thread=IMAGES_PER_THREAD):
                conv_cpu.conv_relu_backward(obs.contiguous().numpy(), out.numpy(), grad.contiguous().numpy(),
                                            grad_weight.numpy(), grad_bias.numpy())
            return None, grad_weight * _SCALE, grad_bias
        x, weight, out = ctx.saved_tensors
        N, M, C, pixels = out.shape
        grad_y = torch.empty((M, pixels, N, C), dtype=grad.dtype, device=grad.device)  # channels-last, as the conv's
        grad_y.permute(2, 0, 3, 1).copy_(torch.ops.aten.threshold_backward(grad.view(out.shape), out, 0))
        grad_y = grad_y.view(M, ctx.rows, pixels // ctx.rows, N * C).permute(0, 3, 1, 2)
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_y, x, weight, [N * C], [1, 1], [0, 0], [1, 1], False, [0, 0], N, [False, True, True])
        return None, grad_weight * _SCALE, grad_bias


IMAGES_PER_THREAD = 256  # (sample, agent) images per Numba thread: a rollout step's 160 stay on one


class _LSTMSequence(torch.autograd.Function):
    """N LSTMs unrolled over T steps (the math of :meth:`BatchedLSTM.cell`, gates i, f, g, o).

    Inputs: ``gates_x [N, T, B, 4H]`` input part of the gates (bias included), ``h0``, ``c0``
    ``[N, B, H]``, ``keep [T, B]`` (0 where the state is zeroed before step t), ``weight_hh
    [N, H, 4H]``. Outputs: hidden states ``[N, T, B, H]``, final ``h`` and ``c`` ``[N, B, H]``.
    Saved for the backward: the activated gates ``[T, N, B, 4H]`` (time-major, so that each
    step's matmul writes into contiguous memory), the state each step started from and tanh of
    each new cell state ``[N, T, B, H]``.

    Per step one matmul, then the element-wise work: on the CPU in float32 one Numba kernel
    per step (:mod:`ssdinfluence.lstm_cpu`), elsewhere a few torch ops into the buffers.
    """

    @staticmethod
    def forward(ctx, gates_x, h, c, keep, weight_hh):
        N, T, B, G = gates_x.shape
        H = G // 4
        acts = gates_x.new_empty((T, N, B, G))  # time-major: each step's matmul writes in place
        h_prev, c_prev, tanh_c, hidden = (gates_x.new_empty((N, T, B, H)) for _ in range(4))
        ctx.numba = lstm_cpu.applies(gates_x)
        if ctx.numba:
            torch.mul(h, keep[0].view(1, B, 1), out=h_prev[:, 0])
            torch.mul(c, keep[0].view(1, B, 1), out=c_prev[:, 0])
            c = torch.empty_like(c)
            arrays = [x.numpy() for x in (acts, h_prev, c_prev, keep.contiguous(), tanh_c, hidden, c)]
            with threads.for_envs(N * B, per_thread=LSTM_ROWS_PER_THREAD):
                for t in range(T):
                    torch.baddbmm(gates_x[:, t], h_prev[:, t], weight_hh, out=acts[t])
                    lstm_cpu.sequence_forward_step(t, *arrays)
            ctx.save_for_backward(acts, h_prev, c_prev, tanh_c, keep, weight_hh)
            return hidden, hidden[:, -1].clone(), c
        for t in range(T):
            k = keep[t].view(1, B, 1)
            hp, cp = torch.mul(h, k, out=h_prev[:, t]), torch.mul(c, k, out=c_prev[:, t])
            a = torch.baddbmm(gates_x[:, t], hp, weight_hh, out=acts[t])
            a[..., :2 * H].sigmoid_(), tanh_(a[..., 2 * H:3 * H]), a[..., 3 * H:].sigmoid_()
            i, f, g, o = a.chunk(4, dim=-1)
            c = torch.mul(f, cp).addcmul_(i, g)
            h = torch.mul(o, tanh(c, out=tanh_c[:, t]), out=hidden[:, t])
        ctx.save_for_backward(acts, h_prev, c_prev, tanh_c, keep, weight_hh)
        return hidden, h.clone(), c

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hidden, grad_h, grad_c):
        acts, h_prev, c_prev, tanh_c, keep, weight_hh = ctx.saved_tensors
        T, N, B, G = acts.shape
        H = G // 4
        weight_t = weight_hh.transpose(1, 2).contiguous()  # MKL: 2x faster than on the transposed view
        if ctx.numba:
            grad_gates = acts.new_empty((N, T, B, G))  # as gates_x
            dh_carry, dc = grad_h.contiguous(), grad_c.clone(memory_format=torch.contiguous_format)
            arrays = [x.numpy() for x in (acts, tanh_c, c_prev, keep.contiguous(), grad_hidden.contiguous())]
            with threads.for_envs(N * B, per_thread=LSTM_ROWS_PER_THREAD):
                for t in reversed(range(T)):
                    lstm_cpu.sequence_backward_step(t, *arrays, dh_carry.numpy(), dc.numpy(), grad_gates.numpy())
                    dh_carry = torch.bmm(grad_gates[:, t], weight_t)
            dh0 = dh_carry.mul_(keep[0].view(1, B, 1))
        else:
            one = torch.ones((), dtype=acts.dtype, device=acts.device)
            grad_gates = torch.empty_like(acts)  # time-major, as acts
            dh_next, dc_next = grad_h, grad_c
            for t in reversed(range(T)):
                a, tc, dg = acts[t], tanh_c[:, t], grad_gates[t]
                i, f, g, o = a.chunk(4, dim=-1)
                dh = grad_hidden[:, t] + dh_next
                torch.mul(dh, tc, out=dg[..., 3 * H:])  # d o
                dc = torch.addcmul(one, tc, tc, value=-1).mul_(o).mul_(dh).add_(dc_next)
                torch.mul(dc, g, out=dg[..., :H])  # d i
                torch.mul(dc, c_prev[:, t], out=dg[..., H:2 * H])  # d f
                torch.mul(dc, i, out=dg[..., 2 * H:3 * H])  # d g
                slope = torch.addcmul(a, a, a, value=-1)  # sigmoid' = s (1 - s) ...
                torch.addcmul(one, g, g, value=-1, out=slope[..., 2 * H:3 * H])  # ... and tanh' = 1 - tanh^2
                dg.mul_(slope)
                k = keep[t].view(1, B, 1)
                dc_next = dc.mul_(f).mul_(k)
                dh_next = torch.bmm(dg, weight_t).mul_(k)
            grad_gates = grad_gates.transpose(0, 1).contiguous()  # [N, T, B, 4H], as gates_x
            dh0, dc = dh_next, dc_next
        grad_weight = torch.bmm(h_prev.view(N, T * B, H).transpose(1, 2), grad_gates.view(N, T * B, G))
        return grad_gates, dh0, dc, None, grad_weight


# (agent, sample) rows per Numba thread in the LSTM's kernels: a minibatch's 160 rows per step take
# both cores (1.4x faster per step); a rollout step's 160 (32 envs) stay on one, as its conv does
LSTM_ROWS_PER_THREAD = 64
CELL_ROWS_PER_THREAD = 256


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
        self.fc1 = ConvFeaturesLinear(num_agents, conv_features, fc_size)
        self.fc2 = BatchedLinear(num_agents, fc_size, fc_size)
        self.lstm = BatchedLSTM(num_agents, fc_size + num_agents * num_actions, lstm_size)
        self.head = BatchedLinear(num_agents, lstm_size, num_agents * num_actions)

    def input_gates(self, fc1: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``fc1 [N, M, fc]`` the pre-activation of its first FC layer on the shared conv features
        (:meth:`AgentNetworks.first_layers`), ``actions [M, N]`` int64 -> gates ``[N, M, 4H]``."""
        x = tanh(self.fc2(tanh(fc1)))
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
