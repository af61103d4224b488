"""The hand-written network kernels equal the plain compositions of torch ops they replace:
outputs and gradients to 1e-5, in float64 (so that only a difference in the math could fail,
not float32 summation order) and the outputs also in float32."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ssdinfluence import conv_cpu, lstm_cpu
from ssdinfluence.networks import (
    AgentNetworks,
    BatchedLSTM,
    ConvFeaturesLinear,
    reset_state,
    run_lstm,
    tanh,
    tanh_,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def reference_conv(model, obs):
    """The conv layer as plain ops: grouped NCHW conv on obs / 255, ReLU, agent-major, features
    in (channel, row, col) order: ``[N, M, C*13*13]``."""
    M, N = obs.shape[:2]
    x = obs.permute(0, 1, 4, 2, 3).reshape(M, N * 3, 15, 15).to(model.conv_weight.dtype) / 255.0
    y = F.relu(F.conv2d(x, model.conv_weight, model.conv_bias, groups=N))
    return y.reshape(M, N, -1).transpose(0, 1)


def reference_features(model, obs):
    """conv -> FC -> FC as plain ops, fc1's weight rows in (channel, pixel) order."""
    x = torch.tanh(torch.baddbmm(model.fc1.bias, reference_conv(model, obs), model.fc1.weight))
    return torch.tanh(torch.baddbmm(model.fc2.bias, x, model.fc2.weight))


def reference_cell(lstm, gates_x, h, c):
    gates = torch.baddbmm(gates_x, h, lstm.weight_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_lstm(lstm, gates_x, state, episode_start):
    """The LSTM unrolled step by step with plain ops (torch.tanh), under autograd."""
    h, c = state
    hs = []
    for t in range(gates_x.shape[1]):
        h, c = reset_state((h, c), episode_start[t])
        h, c = reference_cell(lstm, gates_x[:, t], h, c)
        hs.append(h)
    return torch.stack(hs, dim=1), (h, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_equals_torch_tanh_in_value_and_gradient(dtype):
    x = (torch.linspace(-12, 12, 2001, dtype=dtype) ** 3 / 100).requires_grad_()
    weight = torch.randn(x.shape, dtype=dtype)
    new, old = tanh(x), torch.tanh(x)
    torch.testing.assert_close(new, old, rtol=0, atol=3e-7)
    torch.testing.assert_close(grads((new * weight).sum(), [x])[0], grads((old * weight).sum(), [x])[0],
                               rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(tanh_(x.detach().clone()), old, rtol=0, atol=3e-7)
        out = torch.empty_like(x)
        assert tanh(x, out=out) is out
        torch.testing.assert_close(out, old, rtol=0, atol=3e-7)


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 7, 64])
def test_conv_and_fc_equal_the_plain_ops_in_output_and_gradient(M, device):
    torch.manual_seed(M)
    model = AgentNetworks(5, 9).to(device)
    obs = torch.randint(0, 256, (M, 5, 15, 15, 3), dtype=torch.uint8, device=device)
    torch.testing.assert_close(model.conv(obs), reference_conv(model, obs), **TOL)
    torch.testing.assert_close(model.features(obs), reference_features(model, obs), **TOL)
    model.double()
    weight = torch.randn(5, M, 32, dtype=torch.float64, device=device)  # weighs each output differently
    new, old = model.features(obs), reference_features(model, obs)
    torch.testing.assert_close(new, old, **TOL)
    params = [model.conv_weight, model.conv_bias, model.fc1.weight, model.fc1.bias]
    for g_new, g_old in zip(grads((new * weight).sum(), params), grads((old * weight).sum(), params), strict=True):
        torch.testing.assert_close(g_new, g_old, **TOL)


def test_conv_without_its_cpu_kernels_equals_the_plain_ops(monkeypatch):
    """The grouped-conv path (CUDA's, and the CPU's for other filter shapes or without Numba's
    JIT) in output and gradient."""
    monkeypatch.setattr(conv_cpu, "supports", lambda *args: False)
    torch.manual_seed(2)
    model = AgentNetworks(5, 9).double()
    obs = torch.randint(0, 256, (9, 5, 15, 15, 3), dtype=torch.uint8)
    new, old = model.conv(obs), reference_conv(model, obs)
    weight = torch.randn_like(new)
    torch.testing.assert_close(new, old, **TOL)
    params = [model.conv_weight, model.conv_bias]
    for g_new, g_old in zip(grads((new * weight).sum(), params), grads((old * weight).sum(), params), strict=True):
        torch.testing.assert_close(g_new, g_old, **TOL)


def conv_kernel_results(kernels, M=70, N=5, seed=0):
    """The conv kernels' output and weight and bias gradients on random float32 inputs."""
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (M, N, 15, 15, 3), dtype=np.uint8)
    weight = rng.standard_normal((N * 6, 3, 3, 3)).astype(np.float32) / 255
    bias, grad = rng.standard_normal(N * 6).astype(np.float32), rng.standard_normal((N, M, 1014)).astype(np.float32)
    out, grad_weight, grad_bias = np.empty((N, M, 1014), np.float32), np.empty_like(weight), np.empty_like(bias)
    forward, backward = kernels
    forward(obs, weight, bias, out)
    backward(obs, out, grad, grad_weight, grad_bias)
    return out, grad_weight, grad_bias


def test_conv_kernels_give_the_same_bits_at_any_thread_count():
    """Each output is one task's; the gradients sum fixed chunks of images in a fixed order."""
    kernels = (conv_cpu.conv_relu_forward, conv_cpu.conv_relu_backward)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = conv_kernel_results(kernels)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = conv_kernel_results(kernels)
    finally:
        numba.set_num_threads(before)
    assert (one[0] > 0).mean() > 0.3  # the ReLU passes a good share, and masks the rest
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv_kernels_as_plain_python_equal_the_compiled_ones():
    """Run as Python (as under NUMBA_DISABLE_JIT=1) they compute the same, to float32 rounding:
    the gradients are sums of hundreds of terms up to 255 |grad| that cancel, summed in another
    order when vectorised, so their tolerance scales with the largest gradient."""
    compiled = conv_kernel_results((conv_cpu.conv_relu_forward, conv_cpu.conv_relu_backward), M=2, N=2)
    python = conv_kernel_results((conv_cpu.conv_relu_forward.py_func, conv_cpu.conv_relu_backward.py_func), M=2, N=2)
    for a, b in zip(compiled, python, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=max(1e-5, 1e-6 * np.abs(b).max()))


def test_the_cpu_conv_runs_the_kernels_only_where_they_apply(monkeypatch):
    calls = []
    kernel = conv_cpu.conv_relu_forward
    monkeypatch.setattr(conv_cpu, "conv_relu_forward", lambda *args: calls.append(1) or kernel(*args))
    obs = torch.randint(0, 256, (2, 5, 15, 15, 3), dtype=torch.uint8)
    AgentNetworks(5, 9).conv(obs)
    assert calls == [1]
    other = AgentNetworks(5, 9, conv_channels=4)  # not the kernels' shape: the grouped conv
    torch.testing.assert_close(other.conv(obs), reference_conv(other, obs), **TOL)
    assert calls == [1]
    assert not conv_cpu.supports((30, 3, 5, 5), 5)


@pytest.mark.parametrize("device", DEVICES)
def test_first_layers_of_two_branches_equal_the_plain_ops(device):
    """The MOA's first FC layer rides on the policy's conv pass and matmul: both pre-activations,
    and the gradients of both layers and of the shared conv, equal the plain ops'."""
    torch.manual_seed(3)
    model = AgentNetworks(5, 9).double().to(device)
    other = ConvFeaturesLinear(5, 6 * 169, 20).double().to(device)
    obs = torch.randint(0, 256, (45, 5, 15, 15, 3), dtype=torch.uint8, device=device)
    conv = reference_conv(model, obs)
    old = [torch.baddbmm(layer.bias, conv, layer.weight) for layer in (model.fc1, other)]
    new = model.first_layers(obs, other)
    params = [model.conv_weight, model.conv_bias, model.fc1.weight, model.fc1.bias, other.weight, other.bias]
    weights = [torch.randn_like(x) for x in old]
    loss = [sum((x * w).sum() for x, w in zip(outs, weights, strict=True)) for outs in (new, old)]
    for a, b in zip((*new, *grads(loss[0], params)), (*old, *grads(loss[1], params)), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B", [(1, 3), (8, 5), (32, 4)])
def test_lstm_sequence_equals_the_step_by_step_cell(T, B, device):
    torch.manual_seed(T * 10 + B)
    N, H = 3, 16
    lstm = BatchedLSTM(N, 6, H).double().to(device)
    f64 = {"dtype": torch.float64, "device": device}
    gates_x = torch.randn(N, T, B, 4 * H, **f64, requires_grad=True)
    h0, c0 = (torch.randn(N, B, H, **f64, requires_grad=True) for _ in range(2))
    starts = torch.rand(T, B, device=device) < 0.2
    starts[0, 0] = True
    out_w, h_w, c_w = torch.randn(N, T, B, H, **f64), torch.randn(N, B, H, **f64), torch.randn(N, B, H, **f64)
    results = []
    for run in (run_lstm, reference_lstm):
        hidden, (h, c) = run(lstm, gates_x, (h0, c0), starts)
        loss = (hidden * out_w).sum() + (h * h_w).sum() + (c * c_w).sum()
        results.append((hidden, h, c, *grads(loss, [gates_x, h0, c0, lstm.weight_hh])))
    for new, old in zip(*results, strict=True):
        torch.testing.assert_close(new, old, **TOL)


def test_cell_equals_the_plain_cell():
    torch.manual_seed(1)
    lstm = BatchedLSTM(3, 6, 16)
    gates_x, h, c = torch.randn(3, 5, 64), torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    for new, old in zip(lstm.cell(gates_x, h, c), reference_cell(lstm, gates_x, h, c), strict=True):
        torch.testing.assert_close(new, old, **TOL)


def test_network_sequence_equals_its_steps():
    """The sequence path (kernels) and the step path (the cell) give the same logits and values."""
    torch.manual_seed(0)
    model = AgentNetworks(4, 9, extra_size=9)
    T, B = 6, 3
    obs = torch.randint(0, 256, (T, B, 4, 15, 15, 3), dtype=torch.uint8)
    extra = torch.randn(T, 4, B, 9)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3, 1] = True
    state = model.initial_state(B)
    logits, values, final = model.sequence(obs, extra, state, starts)
    for t in range(T):
        step_logits, step_values, state = model.step(obs[t], extra[t], state, starts[t])
        torch.testing.assert_close(logits[t], step_logits, **TOL)
        torch.testing.assert_close(values[t], step_values, **TOL)
    for x, y in zip(final, state, strict=True):
        torch.testing.assert_close(x, y, **TOL)


def lstm_results(lstm, gates_x, state, starts, weights):
    """Outputs of :func:`run_lstm` and the gradients of a weighted sum of them."""
    hidden, (h, c) = run_lstm(lstm, gates_x, state, starts)
    loss = sum((x * w).sum() for x, w in zip((hidden, h, c), weights, strict=True))
    return (hidden, h, c, *grads(loss, [gates_x, *state, lstm.weight_hh]))


def lstm_inputs(N=5, T=32, B=7, H=128, seed=0):
    """float32 inputs of the size the trainer uses, with episode starts inside the sequence."""
    torch.manual_seed(seed)
    lstm = BatchedLSTM(N, 32, H)
    gates_x = (2 * torch.randn(N, T, B, 4 * H)).requires_grad_()
    state = tuple((torch.randn(N, B, H) * 0.5).requires_grad_() for _ in range(2))
    starts = torch.rand(T, B) < 0.1
    starts[0, 0] = starts[T // 2, 1] = True
    weights = (torch.randn(N, T, B, H), torch.randn(N, B, H), torch.randn(N, B, H))
    return lstm, gates_x, state, starts, weights


def test_lstm_kernels_equal_the_torch_ops_in_output_and_gradient(monkeypatch):
    """The Numba kernels (float32 on the CPU) against the torch ops they replace, on the same
    float32 inputs: outputs and the gradients on every input to 1e-5."""
    inputs = lstm_inputs()
    new = lstm_results(*inputs)
    monkeypatch.setattr(lstm_cpu, "applies", lambda x: False)
    old = lstm_results(*inputs)
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    assert new[0].abs().max() > 0.5 and new[3].abs().max() > 0.5  # saturating gates, large gradients


def test_lstm_kernels_run_only_where_they_apply(monkeypatch):
    calls = []
    kernel = lstm_cpu.sequence_forward_step
    monkeypatch.setattr(lstm_cpu, "sequence_forward_step", lambda *args: calls.append(1) or kernel(*args))
    lstm, gates_x, state, starts, _ = lstm_inputs(T=3, B=2, H=8)
    run_lstm(lstm, gates_x, state, starts)
    assert calls == [1, 1, 1]
    run_lstm(lstm.double(), gates_x.double(), tuple(x.double() for x in state), starts)  # float64: torch ops
    assert calls == [1, 1, 1]
    assert not lstm_cpu.applies(torch.zeros(1, dtype=torch.float64))
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not lstm_cpu.applies(torch.zeros(1))


def test_lstm_cell_kernel_equals_the_torch_ops_without_gradients(monkeypatch):
    """The rollout's step (no gradients): the kernel, and the torch ops with gradients on."""
    torch.manual_seed(4)
    lstm = BatchedLSTM(5, 32, 128)
    gates_x, h, c = 2 * torch.randn(5, 33, 512), torch.randn(5, 33, 128), torch.randn(5, 33, 128)
    calls = []
    kernel = lstm_cpu.cell_forward
    monkeypatch.setattr(lstm_cpu, "cell_forward", lambda *args: calls.append(1) or kernel(*args))
    with torch.no_grad():
        gates = lstm.gates(gates_x, h)
        before = gates.clone()
        new = lstm.activate(gates, c)
    assert calls == [1]
    assert torch.equal(gates, before)  # the pre-activations are left as they were (the influence kernel reads them)
    old = lstm.cell(gates_x, h, c)  # under autograd: the torch ops
    assert calls == [1]
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a, b.detach(), **TOL)


def lstm_kernel_results(kernels, N=3, T=5, B=11, H=16, seed=0):
    """The forward and backward step kernels over a whole sequence, on random float32 inputs."""
    rng = np.random.default_rng(seed)
    G = 4 * H
    forward, backward = kernels
    acts = 2 * rng.standard_normal((T, N, B, G), dtype=np.float32)
    h_prev, c_prev = rng.standard_normal((2, N, T, B, H), dtype=np.float32)
    keep = (rng.random((T, B)) > 0.2).astype(np.float32)
    tanh_c, hidden, c_last = np.empty((N, T, B, H), np.float32), np.empty((N, T, B, H), np.float32), np.empty((N, B, H), np.float32)
    for t in range(T):
        forward(t, acts, h_prev, c_prev, keep, tanh_c, hidden, c_last)
    grad_hidden = rng.standard_normal((N, T, B, H), dtype=np.float32)
    dh_carry, dc = rng.standard_normal((2, N, B, H), dtype=np.float32)
    grad_gates = np.empty((N, T, B, G), np.float32)
    for t in reversed(range(T)):
        backward(t, acts, tanh_c, c_prev, keep, grad_hidden, dh_carry, dc, grad_gates)
    return acts, h_prev, c_prev, tanh_c, hidden, c_last, dc, grad_gates


def test_lstm_kernels_give_the_same_bits_at_any_thread_count():
    kernels = (lstm_cpu.sequence_forward_step, lstm_cpu.sequence_backward_step)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = lstm_kernel_results(kernels, B=40)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = lstm_kernel_results(kernels, B=40)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


def test_lstm_kernels_as_plain_python_equal_the_compiled_ones():
    """Run as Python (as under NUMBA_DISABLE_JIT=1) they compute the same, to float32 rounding."""
    compiled = lstm_kernel_results((lstm_cpu.sequence_forward_step, lstm_cpu.sequence_backward_step), B=3, H=4)
    python = lstm_kernel_results((lstm_cpu.sequence_forward_step.py_func, lstm_cpu.sequence_backward_step.py_func),
                                 B=3, H=4)
    for a, b in zip(compiled, python, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_rollouts_first_layer_weights_follow_every_change_of_the_parameters():
    """Without gradients the first layers' weights side by side are kept between steps
    (:class:`DerivedWeight`); an optimiser step, ``load_state_dict`` or ``.double()`` must show
    in the next step's output."""
    torch.manual_seed(5)
    model, other = AgentNetworks(5, 9), ConvFeaturesLinear(5, 6 * 169, 20)
    obs = torch.randint(0, 256, (4, 5, 15, 15, 3), dtype=torch.uint8)
    optimizer = torch.optim.Adam([*model.parameters(), *other.parameters()], lr=0.1)

    def fresh():  # what the layers give when nothing is kept
        conv = model.conv(obs)
        return [torch.baddbmm(layer.bias, conv, layer.weight) for layer in (model.fc1, other)]

    for change in range(4):
        with torch.no_grad():
            kept, features = model.first_layers(obs, other), model.features(obs)
        expected = fresh()
        for a, b in zip(kept, expected, strict=True):
            torch.testing.assert_close(a, b.detach(), **TOL)
        torch.testing.assert_close(features, model.features(obs).detach(), **TOL)
        if change == 0:
            sum(x.sum() for x in expected).backward()
            optimizer.step()
        elif change == 1:
            model.load_state_dict(AgentNetworks(5, 9).state_dict())
        elif change == 2:
            with torch.no_grad():
                other.bias.add_(1.0)
    model.double(), other.double()
    with torch.no_grad():
        torch.testing.assert_close(model.first_layers(obs, other)[1], fresh()[1].detach(), **TOL)


KERNEL_OUTPUTS = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    import torch
    from ssdinfluence import lstm_cpu, conv_cpu
    from ssdinfluence.influence import causal_influence
    from test_kernels import conv_kernel_results, lstm_kernel_results
    from test_influence import random_influence_inputs
    outputs = list(lstm_kernel_results((lstm_cpu.sequence_forward_step, lstm_cpu.sequence_backward_step), B=20, H=32))
    gates, c = 2 * np.ones((3, 5, 128), np.float32).cumsum(-1) / 64 - 2, np.linspace(-2, 2, 480, dtype=np.float32)
    h_new, c_new = np.empty((3, 5, 32), np.float32), np.empty((3, 5, 32), np.float32)
    lstm_cpu.cell_forward(gates, c.reshape(3, 5, 32), h_new, c_new)
    outputs += [h_new, c_new, *conv_kernel_results((conv_cpu.conv_relu_forward, conv_cpu.conv_relu_backward), M=40)]
    with torch.no_grad():
        outputs.append(causal_influence(**random_influence_inputs(K=18, M=20), groups=2, kind="jsd").numpy())
    np.savez(sys.argv[1], *outputs)
""")


@pytest.mark.slow
def test_kernels_give_the_same_bits_compiled_afresh_and_loaded_from_numbas_cache(tmp_path):
    """The same seed must give the same training in every process: the first compiles the kernels
    and writes Numba's cache, later ones load it. (With ``fastmath``, the LSTM's backward kernel
    once gave results 1 ulp apart between the two, and a killed-and-resumed run then differed
    from an uninterrupted one on a fresh clone.)"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for name in ("fresh", "cached"):
        subprocess.run([sys.executable, "-c", KERNEL_OUTPUTS, str(tmp_path / f"{name}.npz"),
                        str(Path(__file__).resolve().parent)], env=env, check=True, timeout=600)
    fresh, cached = np.load(tmp_path / "fresh.npz"), np.load(tmp_path / "cached.npz")
    assert len(fresh.files) == 14 and any((tmp_path / "cache").rglob("*.nbc"))
    for key in fresh.files:
        np.testing.assert_array_equal(fresh[key], cached[key], err_msg=key)
