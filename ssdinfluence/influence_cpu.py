"""The influence reward on the CPU: counterfactual LSTM steps, heads and divergences in one pass.

:func:`ssdinfluence.influence.counterfactual_logits` and :func:`~ssdinfluence.influence.divergence`
build the influence reward out of a dozen torch ops, each of which writes a ``[P, Q, A, M, 4H]``
temporary (2.9 MB for 5 listeners, 32 envs) and reads it back. Here one Numba kernel takes every
(listener, block, env) cell through all its counterfactual values with the cell's gates, state
and logits held in small buffers that stay in the L1 cache, and writes only the divergence. The
transcendentals use :func:`_exp_into`, a polynomial ``exp`` that LLVM vectorises (``math.exp``
is a scalar libm call, about 8x slower per element). No torch: numpy arrays in, numpy out.

Shapes: P listeners, Q one-hot blocks per listener, A values per block, M samples (envs),
G = 4H gate pre-activations (order i, f, g, o), K head outputs in ``groups`` equal groups of
``K / groups`` outcomes (one group for a policy head; N for a model of other agents that scores
every agent's next action).
"""

from __future__ import annotations

import math

import numba
import numpy as np

KIND_CODES = {"kl": 0, "jsd": 1, "pmi": 2}
CHUNK = 8  # samples per parallel task: enough to amortise its scratch buffers

_FACTOR_LIMIT = np.float32(80.0)  # |argument| below which exp's factors are exact (its clamp is at -87)
_LOG2E = np.float32(1.0 / math.log(2.0))
_LN2 = np.float32(math.log(2.0))
_SQRT2 = np.float32(math.sqrt(2.0))


@numba.njit(cache=True, fastmath=True, error_model="numpy", inline="always")
def _exp_into(x, out, bits, n):
    """``out[:n] = exp(x[:n])`` in float32, within 3e-7 relative error for x in [-87, 88] (clamped
    outside). exp(x) = 2^k exp(r) with k = round(x / ln 2), |r| <= ln 2 / 2: a degree-6 Taylor
    polynomial for exp(r), and 2^k built as float bits in ``bits`` (int32 scratch, size >= n)."""
    scale = bits.view(np.float32)
    for i in range(n):
        v = min(max(x[i], np.float32(-87.0)), np.float32(88.0))
        k = np.float32(np.floor(v * _LOG2E + np.float32(0.5)))  # float32, so r stays float32
        r = v - k * _LN2
        out[i] = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (
            np.float32(1.0 / 6.0) + r * (np.float32(1.0 / 24.0) + r * (
                np.float32(1.0 / 120.0) + r * np.float32(1.0 / 720.0))))))
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for i in range(n):
        out[i] *= scale[i]


@numba.njit(cache=True, fastmath=True, error_model="numpy", inline="always")
def _log_into(x, out, bits, n):
    """``out[:n] = log(x[:n])`` in float32 for positive normal ``x`` (here sums of exps, >= 1):
    x = m 2^k with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(t), t = (m - 1) / (m + 1), |t| <=
    0.172, by its series to t^9 (measured: within 3e-7 absolute for x in [1, 405], 1.2e-7
    relative where |log x| > 1). Vectorised, unlike ``math.log``, a scalar libm call, of which
    the kernel made 18 per sample and listener."""
    raw = x.view(np.int32)
    mantissa = bits.view(np.float32)
    for i in range(n):
        bits[i] = (raw[i] & np.int32(0x007FFFFF)) | np.int32(0x3F800000)  # m in [1, 2)
        out[i] = np.float32((raw[i] >> np.int32(23)) - np.int32(127))
    for i in range(n):
        m = mantissa[i]
        big = m > _SQRT2
        m = m * np.float32(0.5) if big else m
        k = out[i] + (np.float32(1.0) if big else np.float32(0.0))
        t = (m - np.float32(1.0)) / (m + np.float32(1.0))
        t2 = t * t
        out[i] = k * _LN2 + np.float32(2.0) * t * (np.float32(1.0) + t2 * (np.float32(1.0 / 3.0) + t2 * (
            np.float32(1.0 / 5.0) + t2 * (np.float32(1.0 / 7.0) + t2 * np.float32(1.0 / 9.0)))))


@numba.njit(cache=True, fastmath=True, error_model="numpy", inline="always")
def _head_logits(hidden, weight, bias, wanted, logits):
    """``logits[a * K + k] = bias[k] + hidden[a] . weight[k]`` for ``hidden [A, H]``, ``weight
    [K, H]`` (output-major), ``bias [K]``, for the outputs k of the groups that ``wanted
    [groups]`` marks (the others are set to 0): three values a at a time share each load of a
    weight row (the dot products are bound by loads: 41 against 61 ns per value for 9 outputs)."""
    A, H = hidden.shape
    K = weight.shape[0]
    width = K // wanted.shape[0]
    triples = A - A % 3
    for k in range(K):
        if not wanted[k // width]:
            for a in range(A):
                logits[a * K + k] = np.float32(0.0)
            continue
        w = weight[k]
        for a in range(0, triples, 3):
            h0, h1, h2 = hidden[a], hidden[a + 1], hidden[a + 2]
            t0 = t1 = t2 = bias[k]
            for j in range(H):
                t0 += h0[j] * w[j]
                t1 += h1[j] * w[j]
                t2 += h2[j] * w[j]
            logits[a * K + k], logits[(a + 1) * K + k], logits[(a + 2) * K + k] = t0, t1, t2
        for a in range(triples, A):
            h0 = hidden[a]
            total = bias[k]
            for j in range(H):
                total += h0[j] * w[j]
            logits[a * K + k] = total


@numba.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def influence_kernel(gates, c_prev, hidden_now, block, actual, head_weight, head_bias, speaker, taken, kind, pairs,
                     wanted, out):
    """Divergence of each listener's head between the actual value of each block and the
    marginal over the block's counterfactual values (Jaques et al. 2019, Eq. 1-2), for the
    (listener, block) pairs listed in ``pairs``.

    Args:
        gates: ``[P, M, G]`` float32, the gate pre-activations with the actual one-hots in place
            (input part, recurrent part and bias summed).
        c_prev: ``[P, M, H]`` float32, the cell state before the step.
        hidden_now: ``[P, M, H]`` float32, the listeners' hidden state after the step with every
            block at its actual value (the step's own), taken for the actual value instead of
            computing it again; or ``[P, 0, H]``: compute it too.
        block: ``[P, Q, A, G]`` float32, the input-weight rows of each listener's blocks.
        actual: ``[P, Q, M]`` int64, the value each block actually holds.
        head_weight: ``[P, K, H]`` float32 (output-major); head_bias: ``[P, K]`` float32.
        speaker: ``[P, Q, A, M]`` float32, log-probability the influencer gave each value.
        taken: ``[P, Q, M]`` int64, the outcome taken (read only for pmi, one group).
        kind: :data:`KIND_CODES` value.
        pairs: ``[R, 2]`` int64, the (p, q) pairs to evaluate (the others are not touched).
        wanted: ``[P, groups, M]`` bool, the outcome groups wanted of each listener and sample
            (K holds ``groups`` equal groups): the others are 0, and a sample with none wanted
            costs nothing (a model of other agents scores only the agents in its view).
        out: ``[P, Q, groups, M]`` float32, written at the listed pairs.
    """
    M, G = gates.shape[1], gates.shape[2]
    groups = wanted.shape[1]
    given_now = hidden_now.shape[1] == M
    A = block.shape[2]
    H, K = G // 4, head_weight.shape[1]
    width = K // groups
    chunks = (M + CHUNK - 1) // CHUNK
    # exp(-(shared + row)) = exp(-shared) exp(-row): each row's factor once per call, the shared
    # one once per sample, so a counterfactual costs a product per gate instead of an exp
    gate_scale = np.ones(G, np.float32)  # exp(-x) for the sigmoids of i, f, o; exp(-2x) for tanh(g) = 2 sigmoid(2g) - 1
    gate_scale[2 * H:3 * H] = np.float32(2.0)
    R = pairs.shape[0]
    row_factor = np.empty((R, A, G), np.float32)
    rows_in_range = np.empty(R, np.bool_)
    for task in numba.prange(R):
        p, q = pairs[task, 0], pairs[task, 1]
        arg, bits = np.empty(G, np.float32), np.empty(G, np.int32)
        largest = np.float32(0.0)
        for a in range(A):
            for g in range(G):
                x = -block[p, q, a, g] * gate_scale[g]
                arg[g] = x
                size = abs(x)
                largest = size if size > largest else largest
            _exp_into(arg, row_factor[task, a], bits, G)
        rows_in_range[task] = largest < _FACTOR_LIMIT
    for task in numba.prange(R * chunks):
        pair, chunk = task // chunks, task % chunks
        p, q = pairs[pair, 0], pairs[pair, 1]
        shared = np.empty(G, np.float32)  # the gates with block q left empty
        arg = np.empty(G, np.float32)
        e = np.empty(G, np.float32)
        shared_factor = np.empty(G, np.float32)
        c = np.empty(H, np.float32)
        hidden = np.empty((A, H), np.float32)  # h of every counterfactual value
        logits = np.empty(A * K, np.float32)
        probs = np.empty(A * K, np.float32)
        joint = np.empty(A * K, np.float32)
        bits = np.empty(max(G, A * K), np.int32)
        log_marginal = np.empty(K, np.float32)
        totals = np.empty(max(A * groups, K), np.float32)
        log_totals = np.empty(max(A * groups, K), np.float32)
        own = np.empty(A, np.float32)  # the speaker's log-probabilities of the values
        for m in range(chunk * CHUNK, min(M, (chunk + 1) * CHUNK)):
            if not wanted[p, :, m].any():
                for grp in range(groups):
                    out[p, q, grp, m] = np.float32(0.0)
                continue
            now = actual[p, q, m]
            gates_now, row_now = gates[p, m], block[p, q, now]
            largest = np.float32(0.0)
            for g in range(G):
                s = gates_now[g] - row_now[g]
                shared[g] = s
                x = -s * gate_scale[g]
                arg[g] = x
                size = abs(x)
                largest = size if size > largest else largest
            factored = rows_in_range[pair] and largest < _FACTOR_LIMIT
            if factored:
                _exp_into(arg, shared_factor, bits, G)
            for a in range(A):
                if given_now and a == now:  # the step's own hidden state
                    hidden[a] = hidden_now[p, m]
                    continue
                if factored:
                    factor = row_factor[pair, a]
                    for g in range(G):
                        e[g] = shared_factor[g] * factor[g]
                else:  # a factor beyond exp's clamp: the exp of the sum itself
                    for g in range(G):
                        arg[g] = -(shared[g] + block[p, q, a, g]) * gate_scale[g]
                    _exp_into(arg, e, bits, G)
                for j in range(H):
                    c[j] = (c_prev[p, m, j] / (np.float32(1.0) + e[H + j])
                            + (np.float32(2.0) / (np.float32(1.0) + e[2 * H + j]) - np.float32(1.0))
                            / (np.float32(1.0) + e[j]))
                    arg[j] = np.float32(-2.0) * c[j]
                h = hidden[a]
                _exp_into(arg, h, bits, H)
                for j in range(H):
                    h[j] = (np.float32(2.0) / (np.float32(1.0) + h[j]) - np.float32(1.0)) / (np.float32(1.0) + e[3 * H + j])
            _head_logits(hidden, head_weight[p], head_bias[p], wanted[p, :, m], logits)
            # log-softmax within each group: logits -> log-probabilities, probs -> probabilities
            for a in range(A):
                for grp in range(groups):
                    lo = a * K + grp * width
                    top = logits[lo]
                    for k in range(lo + 1, lo + width):
                        top = max(top, logits[k])
                    for k in range(lo, lo + width):
                        logits[k] -= top
            _exp_into(logits, probs, bits, A * K)
            for a in range(A):
                for grp in range(groups):
                    lo = a * K + grp * width
                    total = np.float32(0.0)
                    for k in range(lo, lo + width):
                        total += probs[k]
                    totals[a * groups + grp] = total
            _log_into(totals, log_totals, bits, A * groups)
            for a in range(A):
                for grp in range(groups):
                    log_total = log_totals[a * groups + grp]
                    for k in range(a * K + grp * width, a * K + (grp + 1) * width):
                        logits[k] -= log_total
            for grp in range(groups):  # probabilities are read only at the actual value
                scale = np.float32(1.0) / totals[now * groups + grp]
                for k in range(now * K + grp * width, now * K + (grp + 1) * width):
                    probs[k] *= scale
            # log marginal over the counterfactual values, weighted by the speaker's policy
            for a in range(A):
                own[a] = speaker[p, q, a, m]
            for k in range(K):
                top = logits[k] + own[0]
                for a in range(1, A):
                    top = max(top, logits[a * K + k] + own[a])
                log_marginal[k] = top
            for a in range(A):
                for k in range(K):
                    joint[a * K + k] = logits[a * K + k] + own[a] - log_marginal[k]
            _exp_into(joint, joint, bits, A * K)
            for k in range(K):
                total = np.float32(0.0)
                for a in range(A):
                    total += joint[a * K + k]
                totals[k] = total
            _log_into(totals, log_totals, bits, K)
            for k in range(K):
                log_marginal[k] += log_totals[k]
            for grp in range(groups):
                if not wanted[p, grp, m]:
                    out[p, q, grp, m] = np.float32(0.0)
                    continue
                lo = grp * width
                now_lo = now * K + lo
                value = np.float32(0.0)
                if kind == 0:  # KL(p(.|actual) || marginal)
                    for k in range(width):
                        value += probs[now_lo + k] * (logits[now_lo + k] - log_marginal[lo + k])
                    value = max(value, np.float32(0.0))
                elif kind == 1:  # Jensen-Shannon
                    for k in range(width):
                        p_now, log_now = probs[now_lo + k], logits[now_lo + k]
                        p_marginal = math.exp(log_marginal[lo + k])
                        log_mix = math.log(np.float32(0.5) * (p_now + p_marginal))
                        value += np.float32(0.5) * (p_now * (log_now - log_mix)
                                                    + p_marginal * (log_marginal[lo + k] - log_mix))
                    value = max(value, np.float32(0.0))
                else:  # pmi: log p(taken | actual) - log p(taken)
                    t = taken[p, q, m]
                    value = logits[now_lo + t] - log_marginal[lo + t]
                out[p, q, grp, m] = value
