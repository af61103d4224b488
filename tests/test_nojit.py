"""The kernels run as plain Python too (NUMBA_DISABLE_JIT=1) and give the same results: the envs
bit for bit, the influence kernel to float32 rounding (fastmath lets LLVM reorder its sums)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import numba
    import numpy as np
    import ssdinfluence
    assert numba.config.DISABLE_JIT == int(sys.argv[2])
    warnings.simplefilter("ignore")  # uint64 wrap-around in the RNG is intended
    TINY = "@@@@@@@\\n@PHH P@\\n@ BB  @\\n@P RR @\\n@@@@@@@"
    out = {}
    for name, kwargs in (("cleanup", {"map": TINY}), ("harvest", {"map": TINY.replace("B", "A")})):
        env = ssdinfluence.make(name, num_envs=2, num_agents=3, seed=5, horizon=12, **kwargs)
        obs, _ = env.reset()
        rng = np.random.default_rng(0)
        chunks = [obs.copy()]
        for _ in range(20):
            obs, rewards, _, truncated, info = env.step(rng.integers(0, env.num_actions, (2, 3)))
            chunks += [obs.copy(), rewards.copy(), truncated.copy(), info["visible"].copy()]
        for k, v in env.get_state().items():
            out[f"{name}_{k}"] = v
        out[f"{name}_trace"] = np.concatenate([c.ravel().astype(np.float64) for c in chunks])
    np.savez(sys.argv[1], **out)
    """
)


INFLUENCE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numba
    import numpy as np
    import torch
    from ssdinfluence.influence import causal_influence
    assert numba.config.DISABLE_JIT == int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    P, Q, A, M, H, K = 2, 2, 3, 3, 4, 6
    inputs = dict(gates=torch.randn(P, M, 4 * H, generator=g),
                  c_prev=torch.randn(P, M, H, generator=g), block_weight=torch.randn(P, Q, A, 4 * H, generator=g),
                  actual=torch.randint(0, A, (P, Q, M), generator=g), head_weight=torch.randn(P, H, K, generator=g),
                  head_bias=torch.randn(P, 1, K, generator=g),
                  speaker_logprobs=torch.log_softmax(torch.randn(P, Q, A, M, generator=g), 2))
    with torch.no_grad():
        out = {kind: causal_influence(**inputs, kind=kind, groups=2).numpy() for kind in ("kl", "jsd")}
        out["pmi"] = causal_influence(**inputs, kind="pmi", taken=inputs["actual"]).numpy()
    np.savez(sys.argv[1], **out)
    """
)


def run(path, disable_jit, script=SCRIPT):
    env = dict(os.environ, NUMBA_DISABLE_JIT="1" if disable_jit else "0")
    subprocess.run([sys.executable, "-c", script, str(path), str(int(disable_jit))], check=True, env=env,
                   timeout=600)
    return np.load(path)


def test_python_mode_matches_jit(tmp_path):
    jit = run(tmp_path / "jit.npz", disable_jit=False)
    python = run(tmp_path / "python.npz", disable_jit=True)
    assert sorted(jit.files) == sorted(python.files)
    for key in jit.files:
        np.testing.assert_array_equal(jit[key], python[key], err_msg=key)


def test_influence_kernel_in_python_mode_matches_jit(tmp_path):
    jit = run(tmp_path / "jit.npz", disable_jit=False, script=INFLUENCE_SCRIPT)
    python = run(tmp_path / "python.npz", disable_jit=True, script=INFLUENCE_SCRIPT)
    assert sorted(jit.files) == ["jsd", "kl", "pmi"] == sorted(python.files)
    for key in jit.files:
        assert np.abs(jit[key]).max() > 1e-3, key
        np.testing.assert_allclose(jit[key], python[key], rtol=1e-5, atol=1e-6, err_msg=key)
