"""The LSTM's element-wise work on the CPU: one Numba kernel per time step instead of a dozen torch ops.

One LSTM step of N agents on B samples is a matmul (MKL does it well) and then element-wise
work on ``[N, B, 4H]`` gates: three sigmoids, two tanhs, five products. As torch ops that is a
dozen passes over strided views (the gate chunks), each paying dispatch and a slow strided
loop: in a PPO minibatch (32 steps, 32 sequences, 5 agents) the element-wise part of the
unrolled LSTM took about 16 of its 24 ms, forward and backward, against 7 ms for the matmuls.
Here each (agent, sample) row is one pass that stays in the L1 cache, with the exponentials of
:func:`ssdinfluence.influence_cpu._exp_into` (vectorised; ``math.exp`` is a scalar call).

The math is :meth:`ssdinfluence.networks.BatchedLSTM.cell`'s, gates in the order i, f, g, o:
``c = sigmoid(f) c_prev + sigmoid(i) tanh(g)``, ``h = sigmoid(o) tanh(c)``, with tanh as
``2 sigmoid(2x) - 1``. Each row is one task's, so results do not depend on the thread count.
No torch: numpy float32 arrays in and out.

Shapes: T steps, N agents, B samples, H hidden units, G = 4H gates.
"""

from __future__ import annotations

import numba
import numpy as np

from .influence_cpu import _exp_into

ROWS = 8  # (agent, sample) rows per parallel task: enough to amortise its scratch buffers


def applies(x) -> bool:
    """Whether the kernels run for torch tensor ``x``: float32 on the CPU, with Numba's JIT on."""
    return x.device.type == "cpu" and x.dtype.is_floating_point and x.element_size() == 4 and not (
        numba.config.DISABLE_JIT)


@numba.njit(cache=True, fastmath=True, error_model="numpy", inline="always")
def _activate_row(x, a, c_prev, c_out, tanh_c, h, arg, e, bits):
    """One row: pre-activations ``x [G]`` -> activated gates ``a [G]`` (may be ``x`` itself), new
    cell state ``c_out [H]`` from ``c_prev [H]``, its tanh ``tanh_c [H]`` and ``h [H]``
    (``c_out`` may be ``c_prev``). ``arg``, ``e`` float32 and ``bits`` int32: scratch, ``[G]``."""
    G = x.shape[0]
    H = G // 4
    one, two = np.float32(1.0), np.float32(2.0)
    for g in range(G):
        arg[g] = -x[g]
    for g in range(2 * H, 3 * H):  # tanh(g) = 2 sigmoid(2g) - 1
        arg[g] *= two
    _exp_into(arg, e, bits, G)
    for g in range(G):
        a[g] = one / (one + e[g])
    for g in range(2 * H, 3 * H):
        a[g] = two * a[g] - one
    for j in range(H):
        c = a[H + j] * c_prev[j] + a[j] * a[2 * H + j]
        c_out[j] = c
        arg[j] = np.float32(-2.0) * c
    _exp_into(arg, e, bits, H)
    for j in range(H):
        t = two / (one + e[j]) - one
        tanh_c[j] = t
        h[j] = a[3 * H + j] * t


@numba.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def cell_forward(gates, c_prev, h, c):
    """One step without gradients: ``gates [N, M, G]`` pre-activations (left unchanged) and
    ``c_prev [N, M, H]`` -> ``h``, ``c`` ``[N, M, H]`` (written)."""
    N, M, G = gates.shape
    tasks = (M + ROWS - 1) // ROWS
    for task in numba.prange(N * tasks):
        n, chunk = task // tasks, task % tasks
        a, arg, e = np.empty(G, np.float32), np.empty(G, np.float32), np.empty(G, np.float32)
        tanh_c, bits = np.empty(G // 4, np.float32), np.empty(G, np.int32)
        for m in range(chunk * ROWS, min(M, (chunk + 1) * ROWS)):
            _activate_row(gates[n, m], a, c_prev[n, m], c[n, m], tanh_c, h[n, m], arg, e, bits)


@numba.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def sequence_forward_step(t, acts, h_prev, c_prev, keep, tanh_c, hidden, c_last):
    """Step t of the unrolled LSTM, after its matmul.

    Args:
        t: the step. acts: ``[T, N, B, G]``, at t the pre-activations, activated in place.
        h_prev, c_prev: ``[N, T, B, H]``, the (reset) state each step starts from: read at t,
            written at t + 1 as the new state times ``keep[t + 1]``.
        keep: ``[T, B]`` float32, 0 where the state is zeroed before step t, else 1.
        tanh_c, hidden: ``[N, T, B, H]``, written at t: tanh of the new cell state, and h.
        c_last: ``[N, B, H]``, the new cell state, written at the last step only.
    """
    T, N, B, G = acts.shape
    H = G // 4
    last = t + 1 == T
    tasks = (B + ROWS - 1) // ROWS
    for task in numba.prange(N * tasks):
        n, chunk = task // tasks, task % tasks
        arg, e, bits = np.empty(G, np.float32), np.empty(G, np.float32), np.empty(G, np.int32)
        c = np.empty(H, np.float32)
        for b in range(chunk * ROWS, min(B, (chunk + 1) * ROWS)):
            h = hidden[n, t, b]
            _activate_row(acts[t, n, b], acts[t, n, b], c_prev[n, t, b], c, tanh_c[n, t, b], h, arg, e, bits)
            if last:
                c_last[n, b] = c
            else:
                k = keep[t + 1, b]
                for j in range(H):
                    h_prev[n, t + 1, b, j] = h[j] * k
                    c_prev[n, t + 1, b, j] = c[j] * k


# No fastmath here (nothing to reassociate, no exp): with it, the code compiled in the first
# process and the code loaded from Numba's cache by later ones gave results 1 ulp apart, and a
# killed-and-resumed run differed from an uninterrupted one (tests/test_kernels.py).
@numba.njit(cache=True, parallel=True, error_model="numpy")
def sequence_backward_step(t, acts, tanh_c, c_prev, keep, grad_hidden, dh_carry, dc, grad_gates):
    """Step t of the backward through time, before its matmul.

    Args:
        t: the step. acts: ``[T, N, B, G]`` activated gates; tanh_c, c_prev: ``[N, T, B, H]``
            as the forward wrote them; keep: ``[T, B]`` float32.
        grad_hidden: ``[N, T, B, H]``, the loss's gradient on each h.
        dh_carry: ``[N, B, H]``, the gradient reaching h_t from step t + 1 (``dg_{t+1} @ W_hh^T``,
            to be masked with ``keep[t + 1]``), or at the last step the gradient on the final h.
        dc: ``[N, B, H]``, in: the gradient on c_t from later steps; out: on c_{t-1}, masked
            with ``keep[t]``.
        grad_gates: ``[N, T, B, G]``, written at t: the gradient on the pre-activations.
    """
    T, N, B, G = acts.shape
    H = G // 4
    one = np.float32(1.0)
    last = t + 1 == T
    tasks = (B + ROWS - 1) // ROWS
    for task in numba.prange(N * tasks):
        n, chunk = task // tasks, task % tasks
        for b in range(chunk * ROWS, min(B, (chunk + 1) * ROWS)):
            a, dg, k = acts[t, n, b], grad_gates[n, t, b], keep[t, b]
            tc, cp, dh_out, dh_in, d_c = tanh_c[n, t, b], c_prev[n, t, b], grad_hidden[n, t, b], dh_carry[n, b], dc[n, b]
            carry = one if last else keep[t + 1, b]
            for j in range(H):
                i, f, g, o = a[j], a[H + j], a[2 * H + j], a[3 * H + j]
                dh = dh_out[j] + dh_in[j] * carry
                d = (one - tc[j] * tc[j]) * o * dh + d_c[j]
                dg[j] = d * g * i * (one - i)
                dg[H + j] = d * cp[j] * f * (one - f)
                dg[2 * H + j] = d * i * (one - g * g)
                dg[3 * H + j] = dh * tc[j] * o * (one - o)
                d_c[j] = d * f * k
