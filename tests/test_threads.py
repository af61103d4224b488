"""Thread settings: chosen at import, a user's own values win, small batches step on one thread."""

import json
import os
import re
import subprocess
import sys

import numba
import numpy as np
import pytest

import ssdinfluence
from ssdinfluence import threads

PROBE = """
import json, os
import numpy as np
import ssdinfluence, numba
env = ssdinfluence.make("cleanup", num_envs=2)
env.reset()
env.step(np.zeros((2, 5), np.int32))
import torch
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "layer": numba.threading_layer()}))
"""


def probe(**env_vars):
    env = {k: v for k, v in os.environ.items() if k not in threads.ENVIRONMENT_DEFAULTS}
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sets_a_passive_wait_policy_and_an_omp_or_workqueue_layer():
    found = probe()
    assert found["policy"] == "PASSIVE"
    assert found["layer"] in ("omp", "workqueue")


def test_a_users_own_settings_win():
    found = probe(OMP_WAIT_POLICY="ACTIVE", NUMBA_THREADING_LAYER_PRIORITY="workqueue omp tbb")
    assert found == {"policy": "ACTIVE", "layer": "workqueue"}


def test_small_batches_get_one_thread():
    assert [threads.env_threads(b, 2) for b in (1, 16, 64, 127, 128, 4096)] == [1, 1, 1, 1, 2, 2]
    assert threads.env_threads(4096, 1) == 1
    assert [threads.env_threads(n, 2, per_thread=512) for n in (511, 1023, 1024, 10**6)] == [1, 1, 2, 2]


def test_for_envs_restores_the_thread_count_and_keeps_results():
    before = numba.get_num_threads()
    with threads.for_envs(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    results = []
    for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(count)
        env = ssdinfluence.make("cleanup", num_envs=200, seed=3)
        obs, _ = env.reset()
        actions = np.random.default_rng(0).integers(0, env.num_actions, (20, 200, 5)).astype(np.int32)
        for a in actions:
            obs, rewards, *_ = env.step(a)
        results.append((obs.copy(), rewards.copy()))
    numba.set_num_threads(before)
    assert all(np.array_equal(x, y) for x, y in zip(results[0], results[1], strict=True))


def test_torch_threads_sets_the_count_inside_and_restores_it():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threads.torch_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), threads.torch_threads(2):
            raise RuntimeError("restored on the way out too")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_configure_sets_torch_and_numba_and_rejects_negative_counts():
    import torch

    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    try:
        assert threads.configure(1) == 1
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        cores = threads.available_cores()
        assert threads.configure(0) == cores
        assert numba.get_num_threads() == min(cores, numba.config.NUMBA_NUM_THREADS)
        assert torch.get_num_threads() == (1 if cores <= 2 else cores)
    finally:
        torch.set_num_threads(torch_before)
        numba.set_num_threads(numba_before)
    limit = threads.THREADS_PER_CORE_LIMIT * threads.available_cores()
    for bad in (-1, limit + 1):
        with pytest.raises(ValueError, match=re.escape(f"threads must be in 0..{limit}")):
            threads.configure(bad)
    assert [threads.default_torch_threads(c) for c in (1, 2, 3, 16)] == [1, 1, 3, 16]
    assert [threads.rollout_torch_threads(2, b) for b in (1, 32, 127, 128, 4096)] == [1, 1, 1, 2, 2]
    assert [threads.rollout_torch_threads(c, 4096) for c in (1, 3, 16)] == [1, 3, 16]


def test_keep_freed_memory_applies_on_linux_glibc():
    applied = threads.keep_freed_memory()
    assert applied == (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None)


def _rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION")),
                    reason="glibc's allocator only")
def test_release_freed_memory_returns_the_kept_heap_pages():
    assert threads.keep_freed_memory()  # 1 MiB blocks now come from the heap and stay there when freed
    blocks = [np.ones(2**20, dtype=np.uint8) for _ in range(256)]  # 256 MiB, touched
    pins = [np.ones(64, dtype=np.uint8) for _ in range(256)]  # small live blocks between them
    del blocks
    kept = _rss_mib()
    assert threads.release_freed_memory()
    assert kept - _rss_mib() > 128  # most of the freed 256 MiB is returned, despite the pins
    assert len(pins) == 256
