"""Causal influence (Jaques et al. 2019, Eq. 1-2): every counterfactual in one batched call.

The changed action (or message) enters a listener network as a one-hot block of its LSTM
input, so its contribution to the gate pre-activations is one row of the input weights. The
kernel removes the actual row once and adds each counterfactual row, then runs only the LSTM
cell's element-wise part and the output head for all (block, counterfactual, sample) at once.
Everything before the LSTM (conv, FC, the rest of the input, the recurrent term) is shared.

Terms: a *listener* p is the network whose output we read (an influencee's policy, or an
agent's model of other agents); a *block* q is the one-hot input whose value we vary (an
influencer's action or message); K is the number of outcomes the head scores.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import threads
from .influence_cpu import KIND_CODES, influence_kernel
from .names import DIVERGENCES
from .networks import matmul_weight, tanh, tanh_


def counterfactual_logits(gates, c_prev, block_weight, actual, head_weight, head_bias):
    """Head logits of every listener under every value of every one-hot block.

    Args:
        gates: ``[P, M, G]`` the gate pre-activations with the actual one-hots in place (input
            part, bias and recurrent part ``h_{t-1} @ W_hh``: :meth:`BatchedLSTM.gates`), G = 4H.
        c_prev: ``[P, M, H]`` cell state before the step.
        block_weight: ``[P, Q, A, G]`` the input-weight rows of each listener's Q blocks.
        actual: ``[P, Q, M]`` int64, the value each block actually holds.
        head_weight: ``[P, H, K]``; head_bias: ``[P, 1, K]``.
    Returns:
        ``[P, Q, A, M, K]`` float32: listener p's logits when block q holds value a.
    """
    P, Q, A, G = block_weight.shape
    M, H = gates.shape[1], c_prev.shape[-1]
    actual_rows = torch.gather(block_weight, 2, actual.unsqueeze(-1).expand(P, Q, M, G))  # [P, Q, M, G]
    base = gates.unsqueeze(1) - actual_rows  # [P, Q, M, G]: block q left empty
    every = base.unsqueeze(2) + block_weight.unsqueeze(3)  # [P, Q, A, M, G]
    i, f, g, o = every.chunk(4, dim=-1)
    if torch.is_grad_enabled():
        c = torch.sigmoid(f) * c_prev[:, None, None] + torch.sigmoid(i) * tanh(g)
        h = torch.sigmoid(o) * tanh(c)
    else:  # the reward path: reuse the gates buffer, the cost is memory traffic, not FLOPs
        i.sigmoid_(), f.sigmoid_(), tanh_(g), o.sigmoid_()
        c = f.mul_(c_prev[:, None, None]).addcmul_(i, g)
        h = o.mul_(tanh_(c))
    logits = torch.baddbmm(head_bias, h.reshape(P, Q * A * M, H), matmul_weight(head_weight))
    return logits.reshape(P, Q, A, M, -1)


COUNTERFACTUALS_PER_THREAD = 512  # (listener, block, value, env) cells per Numba thread, ~0.15 ms of work


def causal_influence(gates, c_prev, block_weight, actual, head_weight, head_bias, speaker_logprobs,
                     kind: str = "kl", taken=None, groups: int = 1, pairs=None, groups_wanted=None,
                     hidden_now=None):
    """Causal influence of every block on every listener, for all samples: the divergence
    between the listener's head at the block's actual value and its marginal over the values.

    Args: as :func:`counterfactual_logits`, and
        speaker_logprobs: ``[P, Q, A, M]`` log-probability the influencer gives each value.
        kind: ``kl``, ``jsd`` or ``pmi`` (:func:`divergence`); taken: ``[P, Q, M]`` int64, the
            outcome taken (pmi only).
        groups: the head's K outputs score ``groups`` outcomes of K / groups values each (a
            model of other agents predicts every agent's action: groups = N).
        pairs: ``[P, Q]`` bool, the (listener, block) pairs wanted, or None for all; the others
            are 0 (the kernel skips them: an agent's own message in its own network, say).
        groups_wanted: ``[P, groups, M]`` bool, the outcome groups wanted of each listener and
            sample, or None for all; the others are 0 (the kernel skips their head outputs, and
            a sample with none wanted altogether: the agents out of a predictor's view, say).
        hidden_now: ``[P, M, H]``, the listeners' hidden state with every block at its actual
            value (the step's own output), or None. The kernel takes it for the actual value
            instead of computing that counterfactual again (1 of the A per block).
    Returns:
        ``[P, Q, groups, M]`` float32.

    On the CPU without autograd (the reward path) this is the fused Numba kernel of
    :mod:`ssdinfluence.influence_cpu`; elsewhere (CUDA, or gradients wanted) the torch ops of
    :func:`counterfactual_logits` and :func:`divergence`. Both agree to 1e-5
    (``tests/test_influence.py``).
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(DIVERGENCES)}")
    if kind == "pmi" and (taken is None or groups != 1):
        raise ValueError("pmi needs the outcome actually taken, and one outcome group")
    P, Q, A, G = block_weight.shape
    M, K = gates.shape[1], head_weight.shape[-1]
    if pairs is not None and tuple(pairs.shape) != (P, Q):
        raise ValueError(f"pairs must be [P, Q] = [{P}, {Q}], got {list(pairs.shape)}")
    if groups_wanted is not None and (tuple(groups_wanted.shape) != (P, groups, M)
                                      or groups_wanted.dtype != torch.bool):
        raise ValueError(f"groups_wanted must be bool [P, groups, M] = [{P}, {groups}, {M}], "
                         f"got {groups_wanted.dtype} {list(groups_wanted.shape)}")
    if hidden_now is not None and tuple(hidden_now.shape) != (P, M, c_prev.shape[-1]):
        raise ValueError(f"hidden_now must be [P, M, H] = [{P}, {M}, {c_prev.shape[-1]}], "
                         f"got {list(hidden_now.shape)}")
    if gates.device.type == "cpu" and not torch.is_grad_enabled():
        listed = np.argwhere(np.ones((P, Q), bool) if pairs is None else pairs.numpy())  # [R, 2] int64
        wanted = np.ones((P, groups, M), bool) if groups_wanted is None else groups_wanted.numpy()
        now = gates.new_empty((P, 0, c_prev.shape[-1])) if hidden_now is None else hidden_now
        out = (np.empty if pairs is None else np.zeros)((P, Q, groups, M), np.float32)
        with threads.for_envs(len(listed) * A * M, per_thread=COUNTERFACTUALS_PER_THREAD):
            influence_kernel(gates.contiguous().numpy(), c_prev.contiguous().numpy(), now.contiguous().numpy(),
                             block_weight.contiguous().numpy(), actual.contiguous().numpy(),
                             head_weight.transpose(1, 2).contiguous().numpy(),
                             head_bias.reshape(P, K).contiguous().numpy(), speaker_logprobs.contiguous().numpy(),
                             (actual if taken is None else taken).contiguous().numpy(), KIND_CODES[kind],
                             listed, np.ascontiguousarray(wanted), out)
        return torch.from_numpy(out)
    logits = counterfactual_logits(gates, c_prev, block_weight, actual, head_weight, head_bias)
    logits = logits.unflatten(-1, (groups, K // groups)).permute(0, 1, 4, 2, 3, 5)  # [P, Q, groups, A, M, K/groups]
    by_group = (P, Q, groups, M)
    value = divergence(logits, speaker_logprobs.unsqueeze(2), actual.unsqueeze(2).expand(by_group), kind,
                       taken=None if taken is None else taken.unsqueeze(2).expand(by_group))
    if pairs is not None:
        value = value * pairs.to(value.device, value.dtype).view(P, Q, 1, 1)
    if groups_wanted is not None:
        value = value * groups_wanted.to(value.device, value.dtype).unsqueeze(1)
    return value


def divergence(cf_logits, cf_logprobs, actual, kind: str = "kl", taken=None):
    """Divergence between the outcome distribution at the actual value and the marginal.

    Args:
        cf_logits: ``[..., A, M, K]`` outcome logits for each counterfactual value a.
        cf_logprobs: ``[..., A, M]`` log-probability the influencer gives each value a.
        actual: ``[..., M]`` int64, the value actually taken.
        kind: ``kl`` (KL(p(.|actual) || marginal)), ``jsd`` (Jensen-Shannon) or ``pmi``
            (log p(taken | actual) / p(taken), at the outcome ``taken`` [..., M]).
    Returns:
        ``[..., M]`` float32, finite (log-space throughout, so underflow gives 0, not NaN).
    """
    logp = _log_softmax(cf_logits)  # [..., A, M, K]
    index = actual.unsqueeze(-2).unsqueeze(-1).expand(*actual.shape[:-1], 1, actual.shape[-1], logp.shape[-1])
    logp_actual = torch.gather(logp, -3, index).squeeze(-3)  # [..., M, K]
    log_marginal = torch.logsumexp(logp + cf_logprobs.unsqueeze(-1), dim=-3)  # [..., M, K]
    if kind == "kl":
        value = _kl(logp_actual, log_marginal)
    elif kind == "jsd":
        log_mix = torch.logaddexp(logp_actual, log_marginal) - math.log(2.0)
        value = 0.5 * _kl(logp_actual, log_mix) + 0.5 * _kl(log_marginal, log_mix)
    elif kind == "pmi":
        if taken is None:
            raise ValueError("pmi needs the outcome actually taken")
        pick = taken.unsqueeze(-1)
        value = (logp_actual.gather(-1, pick) - log_marginal.gather(-1, pick)).squeeze(-1)
    else:
        raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(DIVERGENCES)}")
    return value


def _log_softmax(x):
    """``log_softmax`` over the last axis, written out: over a handful of outcomes (K = 9) this
    is about 3x faster than ``torch.log_softmax`` on the CPU. Stable (the maximum is taken off)."""
    z = x - x.amax(-1, keepdim=True)
    return z - z.exp().sum(-1, keepdim=True).log_()


def _kl(logp, logq):
    """KL(p || q) over the last axis from log-probabilities, >= 0 and finite."""
    terms = torch.where(logp > -float("inf"), logp.exp() * (logp - logq), torch.zeros_like(logp))
    return terms.sum(-1).clamp(min=0.0)


def influence_beta(step: int, weight: float, ramp_steps: int = 0, schedule: str = "linear") -> float:
    """The influence reward's weight beta at env step ``step``.

    ``linear``: the paper's curriculum, 0 -> ``weight`` over ``ramp_steps`` steps.
    ``reference``: the open-source reference's piecewise schedule on top of the ramp,
    multipliers [0, 0, 1, 0.5] at steps [0, 1e7, 1e8, 3e8], interpolated linearly.
    """
    ramp = 1.0 if ramp_steps <= 0 else min(step / ramp_steps, 1.0)
    if schedule == "linear":
        return weight * ramp
    if schedule == "reference":
        return weight * ramp * float(np.interp(step, (0.0, 1e7, 1e8, 3e8), (0.0, 0.0, 1.0, 0.5)))
    raise ValueError(f"unknown influence schedule {schedule!r}; choose linear or reference")
