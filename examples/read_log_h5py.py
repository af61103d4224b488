"""Read a run's trajectory log with plain h5py: the episode index, one episode, the map over time.

    python examples/read_log_h5py.py runs/example-influence/trajectories.h5

The layout is documented in ``docs/training.md`` and ``ssdinfluence/trajectories.py``. Open with
``swmr=True``: that also reads a file whose trainer is still running or was killed.
"""

import json
import sys

import h5py
import numpy as np

APPLE = 2  # tile codes: ssdinfluence.envs.tiles (FLOOR 0, WALL 1, APPLE 2, WASTE 3, ...)

path = sys.argv[1] if len(sys.argv) > 1 else "runs/example-influence/trajectories.h5"
with h5py.File(path, "r", swmr=True) as f:
    print("env:", f.attrs["env_name"], "| agents:", f.attrs["num_agents"], "| step fields:",
          list(json.loads(f.attrs["step_fields"])))
    # Only indexed episodes are complete; trust episodes/length, not the step datasets' size.
    start, length = f["episodes/start"][:], f["episodes/length"][:]
    returns = f["episodes/returns"][:]  # [E, N] float32
    print(f"{len(start)} episodes; collective return per episode:", returns.sum(axis=1).round(1))
    k = len(start) - 1  # the last episode
    rows = slice(start[k], start[k] + length[k])
    actions = f["actions"][rows]  # [T, N] int8
    rewards = f["rewards"][rows]  # [T, N] float32
    grid = f["map/grid"][rows]  # [T, H, W] uint8 tile codes
    print(f"episode {k}: {length[k]} steps, returns {rewards.sum(axis=0)}, "
          f"action counts {np.bincount(actions.ravel().astype(np.int64), minlength=int(f.attrs['num_actions']))}")
    apples = (grid == APPLE).sum(axis=(1, 2))  # [T]
    print("apples on the map every 100 steps:", apples[::100])
    if "influence" in f:
        print("mean influence per agent:", f["influence"][rows].mean(axis=0).round(4))
