"""The paper's conv layer on the CPU: Numba kernels for ``relu(conv(obs / 255))`` and its
weight and bias gradients, for N agents' independent 3x3 filters at once.

oneDNN runs this grouped conv (5 groups of 3 -> 6 channels on 15x15 images) at about 6 GFLOP/s,
and its weight gradient slower still: in PPO training on 2 cores the conv's forward and
backward, the rollout's included, were about 40% of the time. Here each (image, agent) is one task that stays in the L1
cache: its view is spread into one float plane per colour, and each output channel in turn is
summed in one accumulator plane. The planes are flat with the image's row stride S, so a tap (colour, dy,
dx) is a shifted slice of a plane, and one contiguous loop of ``(R - 1) * S + R`` elements adds
a colour's nine taps at once, which LLVM vectorises (the ``S - R`` positions at each row's end
are computed and never read; a pass per tap was 2x slower). The weight gradient is the same
slices as dot products, the six channels' with one tap in one pass.
The output is channel-major (a flattened NCHW output's order, the order of fc1's weight rows):
each output row is then one contiguous copy, and the gradient's rows are read the same way
(writing pixel-major, six floats apart, took the forward 1.13x as long).

Determinism: each output element is written by one task; the gradients sum fixed chunks of
:data:`CHUNK` images in a fixed order, so results do not depend on the thread count.

Shapes: M images (samples), N agents, S = 15 (view side), D = 3 colours, C output channels per
agent, K = 3 (filter side), R = S - K + 1 = 13 output side. No torch: numpy arrays in and out.
"""

from __future__ import annotations

import numba
import numpy as np

CHUNK = 32  # images per gradient task: the partial sums of a chunk are added in a fixed order
D, K, C = 3, 3, 6  # colours, filter side, output channels per agent: the loops are written for these
TAPS = D * K * K


def supports(weight_shape, num_agents: int) -> bool:
    """Whether filters of ``weight_shape`` ([N*C, D, K, K]) for ``num_agents`` agents are the
    shape these kernels are written for (the paper's: 6 channels of 3x3 on 3 colours)."""
    return tuple(weight_shape) == (num_agents * C, D, K, K)


@numba.njit(cache=True, inline="always")
def _spread(obs, m, k, planes):
    """``planes [D, S*S]`` = agent k's view of sample m, ``obs [M, N, S, S, D] uint8``,
    colour-planar: one loop over the flat view with a constant stride, which LLVM vectorises
    (three nested loops over rows, columns and colours took 3x as long)."""
    src = obs[m, k].reshape(planes.shape[1] * D)
    p0, p1, p2 = planes[0], planes[1], planes[2]
    for q in range(planes.shape[1]):
        p0[q] = src[D * q]
        p1[q] = src[D * q + 1]
        p2[q] = src[D * q + 2]


@numba.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def conv_relu_forward(obs, weight, bias, out):
    """``out[k, m, (c * R + y) * R + x] = relu(bias[k*C + c] + sum weight[k*C + c] * view)``.

    Args:
        obs: ``[M, N, S, S, D]`` uint8, each agent's view (its colours are the conv's input).
        weight: ``[N*C, D, K, K]`` float, agent k's filters at rows k*C..k*C+C-1, already scaled
            for the uint8 colours; bias: ``[N*C]``.
        out: ``[N, M, C*R*R]`` same dtype, written: features in (channel, row, col) order, a
            flattened NCHW output's, so that each output row is one contiguous copy.
    """
    M, N, S = obs.shape[:3]
    R = S - K + 1
    span = (R - 1) * S + R
    zero = weight.dtype.type(0)
    for task in numba.prange(M * N):
        m, k = task // N, task % N
        planes = np.empty((D, S * S), weight.dtype)
        acc = np.empty(span, weight.dtype)
        _spread(obs, m, k, planes)
        features = out[k, m]
        for c in range(C):
            row = k * C + c
            for q in range(span):
                acc[q] = bias[row]
            for d in range(D):  # the 9 taps of one colour in one pass over the plane
                w = weight[row, d]
                top, mid, low = planes[d, 0:span + 2], planes[d, S:S + span + 2], planes[d, 2 * S:2 * S + span + 2]
                for q in range(span):
                    acc[q] += (w[0, 0] * top[q] + w[0, 1] * top[q + 1] + w[0, 2] * top[q + 2]
                               + w[1, 0] * mid[q] + w[1, 1] * mid[q + 1] + w[1, 2] * mid[q + 2]
                               + w[2, 0] * low[q] + w[2, 1] * low[q + 1] + w[2, 2] * low[q + 2])
            for y in range(R):
                dst, src = features[(c * R + y) * R:(c * R + y + 1) * R], acc[y * S:y * S + R]
                for x in range(R):
                    dst[x] = max(src[x], zero)


@numba.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def conv_relu_backward(obs, out, grad, grad_weight, grad_bias):
    """The weight and bias gradients of :func:`conv_relu_forward`.

    Args:
        obs: as the forward's; out: the forward's output ``[N, M, C*R*R]`` (its zeros are the
            ReLU's mask); grad: ``[N, M, C*R*R]``, the loss's gradient at ``out``.
        grad_weight: ``[N*C, D, K, K]`` written (unscaled: the gradient of the weight the forward
            was given); grad_bias: ``[N*C]`` written.
    """
    M, N, S = obs.shape[:3]
    R = S - K + 1
    span = (R - 1) * S + R
    chunks = (M + CHUNK - 1) // CHUNK
    parts = np.zeros((N, chunks, C, TAPS + 1), grad_weight.dtype)  # taps, then the bias
    zero = grad_weight.dtype.type(0)
    for task in numba.prange(N * chunks):
        k, chunk = task // chunks, task % chunks
        planes = np.empty((D, S * S), grad_weight.dtype)
        g = np.zeros((C, span), grad_weight.dtype)  # positions past each row's end stay 0
        part = parts[k, chunk]
        for m in range(chunk * CHUNK, min(M, (chunk + 1) * CHUNK)):
            _spread(obs, m, k, planes)
            for c in range(C):
                total = zero
                for y in range(R):
                    start = (c * R + y) * R
                    grad_row, out_row, dst = grad[k, m, start:start + R], out[k, m, start:start + R], g[c, y * S:y * S + R]
                    for x in range(R):
                        # a product, not a branch: the ReLU's mask is a coin flip to the predictor
                        v = grad_row[x] * (out_row[x] > zero)
                        dst[x] = v
                        total += v
                part[c, TAPS] += total
            g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
            for d in range(D):  # per tap, the 6 channels' dot products in one pass over the plane
                for dy in range(K):
                    for dx in range(K):
                        tap = planes[d, dy * S + dx:dy * S + dx + span]
                        s0 = s1 = s2 = s3 = s4 = s5 = zero
                        for q in range(span):
                            v = tap[q]
                            s0 += g0[q] * v
                            s1 += g1[q] * v
                            s2 += g2[q] * v
                            s3 += g3[q] * v
                            s4 += g4[q] * v
                            s5 += g5[q] * v
                        j = (d * K + dy) * K + dx
                        part[0, j] += s0
                        part[1, j] += s1
                        part[2, j] += s2
                        part[3, j] += s3
                        part[4, j] += s4
                        part[5, j] += s5
    for k in range(N):
        for c in range(C):
            row = k * C + c
            for j in range(TAPS + 1):
                total = zero
                for chunk in range(chunks):
                    total += parts[k, chunk, c, j]
                if j < TAPS:
                    grad_weight[row, j // (K * K), (j // K) % K, j % K] = total
                else:
                    grad_bias[row] = total
