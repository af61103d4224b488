"""trajectories.h5: round trips, re-rendering, resuming, validation, crash safety, clear errors."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

import ssdinfluence
from ssdinfluence.envs import tiles
from ssdinfluence.trajectories import TrajectoryFileError, TrajectoryReader, TrajectoryWriter


def writer_kwargs(num_agents=2, store_observations=False, **overrides):
    """Keyword arguments of a small writer with extra step and episode fields (self-contained:
    the crash tests paste its source into a child process)."""
    import numpy as np

    from ssdinfluence.envs import tiles

    small_map = "@@@@@@@\n@P   P@\n@     @\n@ BBB @\n@RRR  @\n@@@@@@@"  # 6 x 7
    kwargs = dict(
        env_name="cleanup", num_agents=num_agents, num_actions=9, map_text=small_map,
        palette=tiles.make_palette(num_agents), config={"lr": 3e-4, "seed": np.int64(7), "envs": [1, 2]},
        store_observations=store_observations,
        step_fields={"influence": ((num_agents,), np.float32), "messages": ((num_agents,), np.int16),
                     "influence_pairs": ((num_agents, num_agents), np.float32)},
        episode_fields={"efficiency": ((), np.float32), "equality": ((), np.float32)},
    )
    kwargs.update(overrides)
    return kwargs


def make_episode(k, num_agents=2, store_observations=False):
    """Deterministic random episode number ``k`` (T = 3 + k % 5 steps; rewards filled with k)."""
    import numpy as np

    rng = np.random.default_rng(k)
    T, N, H, W = 3 + k % 5, num_agents, 6, 7
    steps = {
        "actions": rng.integers(0, 9, (T, N)),
        "rewards": np.full((T, N), k, np.float32),
        "grid": rng.integers(0, 6, (T, H, W)).astype(np.uint8),
        "positions": np.stack([rng.integers(0, H, (T, N)), rng.integers(0, W, (T, N))], axis=-1).astype(np.int32),
        "orientations": rng.integers(0, 4, (T, N)).astype(np.int8),
        "beams": rng.integers(0, 3, (T, H, W)).astype(np.uint8),
        "influence": rng.random((T, N)).astype(np.float32),
        "messages": rng.integers(-300, 300, (T, N)).astype(np.int16),
        "influence_pairs": rng.random((T, N, N)).astype(np.float32),
    }
    if store_observations:
        steps["observations"] = rng.integers(0, 256, (T, N, 15, 15, 3), dtype=np.uint8)
    episode = {"env_index": k % 3, "env_steps": 100 * (k + 1), "update": k // 2,
               "returns": steps["rewards"].sum(axis=0), "efficiency": np.float32(k / 10), "equality": 0.5}
    return steps, episode


def check_episode(reader, k, *, store_observations=False, index=None):
    """Episode ``index`` (default k) of the file holds exactly ``make_episode(k)``."""
    steps, episode = make_episode(k, reader.num_agents, store_observations)
    got = reader.episode(k if index is None else index)
    T = len(steps["actions"])
    expected_keys = set(steps) | {"terminations", "truncations"}
    assert set(got) == expected_keys
    for name, value in steps.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert not got["terminations"].any()
    assert got["truncations"].tolist() == [[False] * reader.num_agents] * (T - 1) + [[True] * reader.num_agents]


def file_digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("store_observations", [False, True])
def test_round_trip(tmp_path, store_observations):
    path = tmp_path / "trajectories.h5"
    with TrajectoryWriter(path, **writer_kwargs(3, store_observations)) as writer:
        assert writer.num_episodes == 0
        for k in range(6):
            assert writer.append_episode(*make_episode(k, 3, store_observations)) == k
        assert writer.num_episodes == 6
    lengths = [3 + k % 5 for k in range(6)]

    with TrajectoryReader(path) as reader:
        assert (reader.env_name, reader.num_agents, reader.num_actions, reader.map_shape) == ("cleanup", 3, 9, (6, 7))
        assert reader.num_episodes == len(reader) == 6 and reader.num_steps == sum(lengths)
        assert reader.map_text == writer_kwargs()["map_text"]
        np.testing.assert_array_equal(reader.palette, tiles.make_palette(3))
        assert reader.config == {"lr": 3e-4, "seed": 7, "envs": [1, 2]}
        assert {"ssdinfluence", "numpy", "h5py", "hdf5", "python"} <= set(reader.versions)
        assert reader.versions["ssdinfluence"] == ssdinfluence.__version__
        assert reader.store_observations == store_observations
        assert reader.step_fields["influence_pairs"] == ((3, 3), np.dtype(np.float32))
        assert reader.episode_fields["efficiency"] == ((), np.dtype(np.float32))

        index = reader.episodes()
        assert index["length"].tolist() == lengths
        assert index["start"].tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        assert index["env_index"].tolist() == [k % 3 for k in range(6)]
        assert index["env_steps"].tolist() == [100 * (k + 1) for k in range(6)]
        assert index["update"].tolist() == [k // 2 for k in range(6)]
        np.testing.assert_array_equal(index["returns"], [make_episode(k, 3)[1]["returns"] for k in range(6)])
        np.testing.assert_allclose(index["efficiency"], np.arange(6) / 10, rtol=1e-6)
        assert index["returns"].dtype == np.float32 and index["returns"].shape == (6, 3)

        for k in range(6):
            check_episode(reader, k, store_observations=store_observations)
        check_episode(reader, 5, store_observations=store_observations, index=-1)
        episode = reader.episode(0)
        assert episode["actions"].dtype == np.int8 and episode["positions"].dtype == np.int16
        assert episode["orientations"].dtype == np.int8 and episode["rewards"].dtype == np.float32
        with pytest.raises(IndexError, match="episode 6 out of range.*6 episode"):
            reader.episode(6)
        with pytest.raises(IndexError, match="out of range"):
            reader.episode(-7)
        frames = reader.frames(1, start=1, stop=3, scale=2)
        assert frames.shape == (2, 12, 14, 3) and frames.dtype == np.uint8

    # The layout promised in the module docstring.
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "ssdinfluence-trajectories" and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["config"])["lr"] == 3e-4
        S = sum(lengths)
        expected = {"actions": (S, 3), "rewards": (S, 3), "terminations": (S, 3), "truncations": (S, 3),
                    "influence": (S, 3), "messages": (S, 3), "influence_pairs": (S, 3, 3),
                    "map/grid": (S, 6, 7), "map/positions": (S, 3, 2), "map/orientations": (S, 3),
                    "map/beams": (S, 6, 7), "episodes/start": (6,), "episodes/returns": (6, 3),
                    "episodes/efficiency": (6,)}
        if store_observations:
            expected["observations"] = (S, 3, 15, 15, 3)
        else:
            assert "observations" not in f
        for name, shape in expected.items():
            dataset = f[name]
            assert dataset.shape == shape, name
            assert dataset.maxshape == (None,) + shape[1:] and dataset.chunks is not None, name
            assert dataset.compression == "gzip", name
        assert f["truncations"].dtype == np.bool_ and f["episodes/start"].dtype == np.int64


def test_frames_equal_env_render(tmp_path):
    env = ssdinfluence.make("cleanup", num_envs=1, num_agents=3, seed=0, horizon=20)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    path = tmp_path / "trajectories.h5"
    record = {k: [] for k in ("actions", "rewards", "grid", "positions", "orientations", "beams", "observations")}
    rendered, finished = [], []
    writer = TrajectoryWriter(path, env_name=env.name, num_agents=3, num_actions=env.num_actions,
                              map_text=env.layout.text, palette=env.palette, store_observations=True,
                              config={"env": env.rule_params()})
    with writer:
        for _ in range(40):
            state = env.get_state()  # s_t, before the step
            rendered.append(env.render(0, scale=4))
            actions = rng.choice([tiles.FIRE, tiles.CLEAN, tiles.MOVE_UP, tiles.TURN_CLOCKWISE], size=(1, 3))
            for name in ("grid", "positions", "orientations", "beams"):
                record[name].append(state[name][0])
            record["observations"].append(obs[0].copy())
            record["actions"].append(actions[0])
            obs, rewards, _, truncated, info = env.step(actions)
            record["rewards"].append(rewards[0].copy())
            if truncated[0]:
                steps = {k: np.stack(v) for k, v in record.items()}
                np.testing.assert_allclose(steps["rewards"].sum(0), info["episode_returns"][0])
                finished.append(steps)
                writer.append_episode(steps, {"env_index": 0, "env_steps": 20 * len(finished), "update": 0,
                                              "returns": info["episode_returns"][0]})
                record = {k: [] for k in record}
    assert len(finished) == 2 and any(steps["beams"].any() for steps in finished)  # beams are exercised

    with TrajectoryReader(path) as reader:
        assert reader.config["env"]["horizon"] == 20
        for k in range(2):
            frames = reader.frames(k, scale=4)
            assert frames.shape == (20, 25 * 4, 18 * 4, 3) and frames.dtype == np.uint8
            np.testing.assert_array_equal(frames, np.stack(rendered[20 * k:20 * (k + 1)]))
            np.testing.assert_array_equal(reader.episode(k)["observations"], finished[k]["observations"])
        np.testing.assert_array_equal(reader.frames(1, start=5, stop=9, scale=4), np.stack(rendered[25:29]))
        np.testing.assert_array_equal(reader.frames(-1, start=-2, scale=4), np.stack(rendered[38:40]))
        assert reader.frames(0, start=7, stop=3).shape == (0, 25 * 8, 18 * 8, 3)
        assert reader.episodes()["returns"].shape == (2, 3)


# ---------------------------------------------------------------------------- resuming
def test_append_mode_resumes_and_rejects_mismatching_file(tmp_path):
    path = tmp_path / "trajectories.h5"
    with TrajectoryWriter(path, mode="a", **writer_kwargs()) as writer:  # "a" creates a missing file
        for k in range(2):
            writer.append_episode(*make_episode(k))
    with TrajectoryWriter(path, mode="a", **writer_kwargs(config={"other": 1})) as writer:
        assert writer.num_episodes == 2
        assert writer.append_episode(*make_episode(2)) == 2
        with TrajectoryReader(path) as reader:  # a reader works while the writer is open
            assert reader.num_episodes == 3
            writer.append_episode(*make_episode(3))
            assert reader.refresh() == 4
            check_episode(reader, 3)
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 4 and reader.config["lr"] == 3e-4  # the original config stays
        for k in range(4):
            check_episode(reader, k)

    digest = file_digest(path)
    mismatches = [
        ({"env_name": "harvest"}, "env_name"),
        ({"num_agents": 3, "palette": tiles.make_palette(3)}, "num_agents"),
        ({"num_actions": 8}, "num_actions"),
        ({"map_text": "@@@\n@P@\n@@@"}, "map_text"),
        ({"store_observations": True}, "store_observations"),
        ({"step_fields": {"influence": ((2,), np.float32)}}, "step_fields"),
        ({"episode_fields": {"efficiency": ((), np.float64), "equality": ((), np.float32)}}, "episode_fields"),
    ]
    for override, field in mismatches:
        with pytest.raises(TrajectoryFileError, match=f"does not match.*{field}") as error:
            TrajectoryWriter(path, mode="a", **writer_kwargs(**override))
        assert error.value.path == str(path)
    assert file_digest(path) == digest
    with pytest.raises(ValueError, match="mode"):
        TrajectoryWriter(path, mode="r", **writer_kwargs())


def test_truncate_after_update_for_resuming_from_a_checkpoint(tmp_path):
    path = tmp_path / "trajectories.h5"
    with TrajectoryWriter(path, **writer_kwargs()) as writer:
        for k in range(6):  # make_episode(k) has update k // 2: 0 0 1 1 2 2
            writer.append_episode(*make_episode(k))
        assert writer.truncate_after_update(5) == 6
    with TrajectoryWriter(path, mode="a", **writer_kwargs()) as writer:
        assert writer.truncate_after_update(0) == 2 and writer.num_episodes == 2
        assert writer.num_steps == 3 + 4
        with pytest.raises(ValueError, match="update must be an integer"):
            writer.truncate_after_update(1.5)
        writer.append_episode(*make_episode(2))
    with TrajectoryReader(path) as reader:
        assert reader.episodes()["update"].tolist() == [0, 0, 1]
        for k in range(3):
            check_episode(reader, k)
    with h5py.File(path, "r") as f:
        assert f["actions"].shape[0] == f["map/beams"].shape[0] == 3 + 4 + 5


def test_reader_trusts_only_the_index(tmp_path):
    """Rows of a half-appended episode (a writer killed mid-append) are invisible, then dropped."""
    path = tmp_path / "trajectories.h5"
    with TrajectoryWriter(path, **writer_kwargs()) as writer:
        for k in range(2):
            writer.append_episode(*make_episode(k))
    with h5py.File(path, "a") as f:  # simulate: step rows written, index rows all but `length`
        for name in ("actions", "rewards", "map/grid"):
            f[name].resize(f[name].shape[0] + 5, axis=0)
        for name in ("start", "env_index", "returns"):
            f[f"episodes/{name}"].resize(3, axis=0)
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 2 and reader.episodes()["start"].shape == (2,)
    with h5py.File(path, "a") as f:  # ... and `length` resized, but its value never reached the disk
        for name in f["episodes"]:
            f[f"episodes/{name}"].resize(3, axis=0)
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 2
    with TrajectoryWriter(path, mode="a", **writer_kwargs()) as writer:
        assert writer.num_episodes == 2
        writer.append_episode(*make_episode(2))
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 3
        for k in range(3):
            check_episode(reader, k)
    with h5py.File(path, "r") as f:
        assert f["actions"].shape[0] == f["map/grid"].shape[0] == sum(3 + k % 5 for k in range(3))


# ---------------------------------------------------------------------------- validation
def _bad(change):
    steps, episode = make_episode(1)
    change(steps, episode)
    return steps, episode


BAD_EPISODES = {
    "missing grid": (lambda s, e: s.pop("grid"), "steps is missing.*'grid'"),
    "unexpected step field": (lambda s, e: s.update(value=s["rewards"]), "unexpected.*'value'"),
    "writer's own field": (lambda s, e: s.update(truncations=np.zeros((4, 2), bool)), "unexpected.*'truncations'"),
    "short rewards": (lambda s, e: s.update(rewards=s["rewards"][:-1]), r"steps\['rewards'\] has shape \(3, 2\), expected \(4, 2\)"),
    "agents": (lambda s, e: s.update(actions=np.zeros((4, 3), int)), r"steps\['actions'\] has shape \(4, 3\), expected \(4, 2\)"),
    "no steps": (lambda s, e: s.update(actions=np.zeros((0, 2), int)), "T >= 1"),
    "float actions": (lambda s, e: s.update(actions=s["actions"] * 1.0), r"steps\['actions'\] has dtype float64"),
    "action out of range": (lambda s, e: s["actions"].__setitem__((0, 0), 9), r"steps\['actions'\] has value 9"),
    "off-map position": (lambda s, e: s["positions"].__setitem__((1, 1, 1), 7), r"steps\['positions'\] has value 7"),
    "view code in grid": (lambda s, e: s["grid"].__setitem__((0, 0, 0), tiles.AGENT_BASE), r"steps\['grid'\]"),
    "beam code": (lambda s, e: s["beams"].__setitem__((0, 0, 0), 3), r"steps\['beams'\] has value 3"),
    "orientation": (lambda s, e: s["orientations"].__setitem__((0, 0), 4), r"steps\['orientations'\]"),
    "int16 overflow": (lambda s, e: s.update(messages=np.full((4, 2), 40000)), r"steps\['messages'\].*int16"),
    "string field": (lambda s, e: s.update(influence=np.full((4, 2), "a")), r"steps\['influence'\] has dtype"),
    "pairs shape": (lambda s, e: s.update(influence_pairs=np.zeros((4, 2))), r"steps\['influence_pairs'\] has shape"),
    "missing returns": (lambda s, e: e.pop("returns"), "episode is missing.*'returns'"),
    "unexpected episode field": (lambda s, e: e.update(fairness=1.0), "unexpected.*'fairness'"),
    "negative env_index": (lambda s, e: e.update(env_index=-1), r"episode\['env_index'\] must be a non-negative"),
    "float env_steps": (lambda s, e: e.update(env_steps=1.5), r"episode\['env_steps'\]"),
    "returns shape": (lambda s, e: e.update(returns=np.zeros(3)), r"episode\['returns'\] has shape \(3,\)"),
    "episode field shape": (lambda s, e: e.update(efficiency=np.zeros(2)), r"episode\['efficiency'\] has shape"),
    "empty steps": (lambda s, e: s.clear(), "steps is missing"),
}


def test_validation_errors_name_the_field_and_leave_the_file_unchanged(tmp_path):
    path = tmp_path / "trajectories.h5"
    with TrajectoryWriter(path, **writer_kwargs()) as writer:
        writer.append_episode(*make_episode(0))
        digest = file_digest(path)
        assert len(make_episode(1)[0]["actions"]) == 4
        for name, (change, message) in BAD_EPISODES.items():
            with pytest.raises(ValueError, match=message):
                writer.append_episode(*_bad(change))
            assert file_digest(path) == digest, name
            assert writer.num_episodes == 1 and writer.num_steps == 3, name
        with pytest.raises(ValueError, match="steps must be a dict"):
            writer.append_episode([1, 2], {})
        assert file_digest(path) == digest
        writer.append_episode(*make_episode(1))  # still usable
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 2
        check_episode(reader, 1)


def test_ctrl_c_during_an_append_waits_for_the_episode(tmp_path, monkeypatch):
    """A Ctrl-C arriving while an episode is written is held until the episode is complete."""
    path = tmp_path / "trajectories.h5"
    writer = TrajectoryWriter(path, **writer_kwargs())
    original, calls = h5py.Dataset.__setitem__, []

    def ctrl_c_midway(self, key, value):
        calls.append(self.name)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", ctrl_c_midway)
    with pytest.raises(KeyboardInterrupt):
        writer.append_episode(*make_episode(0))
    monkeypatch.setattr(h5py.Dataset, "__setitem__", original)
    writer.close()
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 1
        check_episode(reader, 0)


def test_interrupted_append_is_rolled_back(tmp_path, monkeypatch):
    """An error in the middle of writing an episode leaves no trace of it."""
    path = tmp_path / "trajectories.h5"
    writer = TrajectoryWriter(path, **writer_kwargs())
    writer.append_episode(*make_episode(0))
    original, calls = h5py.Dataset.__setitem__, []

    def interrupted(self, key, value):
        calls.append(self.name)
        if len(calls) == 4:
            raise OSError("disk full")
        original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", interrupted)
    with pytest.raises(TrajectoryFileError):
        writer.append_episode(*make_episode(1))
    monkeypatch.setattr(h5py.Dataset, "__setitem__", original)
    assert writer.num_episodes == 1
    with h5py.File(path, "r", swmr=True) as f:
        assert {f[n].shape[0] for n in ("actions", "rewards", "map/grid", "influence")} == {3}
    writer.append_episode(*make_episode(1))
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.append_episode(*make_episode(2))
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == 2
        check_episode(reader, 0)
        check_episode(reader, 1)


def test_bad_writer_arguments(tmp_path):
    path = tmp_path / "t.h5"
    cases = [
        ({"num_agents": 0}, "num_agents"),
        ({"num_actions": True}, "num_actions"),
        ({"env_name": ""}, "env_name"),
        ({"map_text": "@@@\n@@"}, "ragged"),
        ({"palette": tiles.make_palette(1)}, "palette"),
        ({"config": [1, 2]}, "config"),
        ({"step_fields": {"rewards": ((2,), np.float32)}}, "reserved"),
        ({"step_fields": {"grid": ((2,), np.float32)}}, "reserved"),
        ({"step_fields": {"bad/name": ((2,), np.float32)}}, "not a valid identifier"),
        ({"step_fields": {"x": ((2,), object)}}, "dtype object"),
        ({"step_fields": {"x": ((-1,), np.float32)}}, "invalid shape"),
        ({"step_fields": {"x": np.float32}}, r"must be \(shape tuple, dtype\)"),
        ({"episode_fields": {"returns": ((), np.float32)}}, "reserved"),
    ]
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            TrajectoryWriter(path, **writer_kwargs(**override))
    assert not path.exists()


def test_versions_record_torch_only_if_already_imported(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with TrajectoryWriter(tmp_path / "a.h5", **writer_kwargs()):
        pass
    monkeypatch.setitem(sys.modules, "torch", type(sys)("torch"))
    sys.modules["torch"].__version__ = "9.9.9"
    with TrajectoryWriter(tmp_path / "b.h5", **writer_kwargs()):
        pass
    with TrajectoryReader(tmp_path / "a.h5") as a, TrajectoryReader(tmp_path / "b.h5") as b:
        assert "torch" not in a.versions and b.versions["torch"] == "9.9.9"


# ---------------------------------------------------------------------------- crashes
CHILD = (
    "import sys, time\n"
    "from ssdinfluence.trajectories import TrajectoryWriter\n"
    "assert 'torch' not in sys.modules, 'ssdinfluence.trajectories imported torch'\n"
    + textwrap.dedent(inspect.getsource(writer_kwargs))
    + textwrap.dedent(inspect.getsource(make_episode))
    + "with TrajectoryWriter(sys.argv[1], **writer_kwargs()) as writer:\n"
    "    k = 0\n"
    "    while True:\n"
    "        writer.append_episode(*make_episode(k))\n"
    "        k += 1\n"
    "        time.sleep(0.005)\n"
)


def wait_for_episodes(path, proc, count, timeout=60.0):
    """Poll with TrajectoryReader (as a monitoring process would) until it sees ``count`` episodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"writer exited early ({proc.returncode}): {proc.communicate()[1].decode()}")
        try:
            with TrajectoryReader(path) as reader:
                if reader.num_episodes >= count:
                    return
        except TrajectoryFileError:  # not created yet, or still being set up (locked)
            pass
        time.sleep(0.02)
    pytest.fail(f"the writer did not write {count} episodes in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_file_readable_and_resumable_after_the_writer_is_killed(tmp_path, sig):
    path = tmp_path / "trajectories.h5"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stderr=subprocess.PIPE)
    try:
        wait_for_episodes(path, proc, 2)
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)  # generous: CI machines may be loaded
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if sig == signal.SIGINT:  # Ctrl-C: the writer's `with` closed the file cleanly
        with h5py.File(path, "r") as f:
            assert f.attrs["format"] == "ssdinfluence-trajectories"

    with TrajectoryReader(path) as reader:
        count = reader.num_episodes
        assert count >= 2
        for k in range(count):
            check_episode(reader, k)
            assert (reader.episode(k)["rewards"] == k).all()
        assert reader.episodes()["env_steps"].tolist() == [100 * (k + 1) for k in range(count)]

    # Resume (after kill -9 this copies the complete episodes into a fresh file first).
    with TrajectoryWriter(path, mode="a", **writer_kwargs()) as writer:
        assert writer.num_episodes == count
        writer.append_episode(*make_episode(count))
    assert sorted(os.listdir(tmp_path)) == ["trajectories.h5"]  # no temporary file left behind
    with TrajectoryReader(path) as reader:
        assert reader.num_episodes == count + 1
        for k in range(count + 1):
            check_episode(reader, k)
    with h5py.File(path, "r") as f:  # closed cleanly now, and no rows beyond the index
        assert f["actions"].shape[0] == sum(3 + k % 5 for k in range(count + 1))


# ---------------------------------------------------------------------------- a kill at every write
# Preloaded into a process, this SIGKILLs it instead of making its KILL_AT_WRITE-th change to a
# file (counted from when the variable is set): HDF5's pwrite and ftruncate, os.replace's rename.
KILLER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static long count;

static void tick(void) {
    const char *limit = getenv("KILL_AT_WRITE");
    if (limit && ++count == atol(limit)) kill(getpid(), SIGKILL);
}

#define WRAP(ret, name, params, args) \
    ret name params { tick(); return ((ret (*) params) dlsym(RTLD_NEXT, #name)) args; }

WRAP(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t at), (fd, buf, n, at))
WRAP(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off64_t at), (fd, buf, n, at))
WRAP(int, ftruncate, (int fd, off_t length), (fd, length))
WRAP(int, ftruncate64, (int fd, off64_t length), (fd, length))
WRAP(int, rename, (const char *old, const char *new), (old, new))
"""

# Runs with the killer preloaded: argv = [root, scenario]. Makes root/start (a run directory
# with a checkpoint of update 2), then for event = 1, 2, ... copies it to root/killed-at-<event>
# and, in a forked child, opens the log there as the run goes on, killed at that write; stops
# at the first event the child gets through.
KILL_AT_EVERY_WRITE = textwrap.dedent('''
    import os, shutil, signal, sys, traceback
    from pathlib import Path

    from ssdinfluence.trajectories import TrajectoryWriter


    def in_child(work):
        """Run ``work()`` in a forked child; its wait status."""
        pid = os.fork()
        if pid == 0:
            try:
                work()
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        return os.waitpid(pid, 0)[1]


    def write_log(path, killed):
        """Episodes 0..3 (logged under updates 0, 0, 1, 1) by a writer killed after the
        checkpoint of update 2, or 0..5 (also 2, 2) by one that went on and closed the log."""
        writer = TrajectoryWriter(path, **writer_kwargs())
        for k in range(4 if killed else 6):
            writer.append_episode(*make_episode(k))
        if killed:
            os.kill(os.getpid(), signal.SIGKILL)
        writer.close()


    def open_log(path, scenario):
        """Create the log for the first episode of a fresh run, or resume it from the
        checkpoint of update 2 (TrajectoryRecorder.resume); then close it."""
        if scenario == "create":
            TrajectoryWriter(path, **writer_kwargs()).close()
        else:
            with TrajectoryWriter(path, mode="a", **writer_kwargs()) as writer:
                writer.truncate_after_update(1)


    root, scenario = Path(sys.argv[1]), sys.argv[2]
    start = root / "start"
    start.mkdir()
    if scenario != "create":
        in_child(lambda: write_log(start / "trajectories.h5", killed=scenario == "resume-killed-log"))
    for event in range(1, 10_000):
        run = root / f"killed-at-{event}"
        shutil.copytree(start, run)

        def work():
            os.environ["KILL_AT_WRITE"] = str(event)
            open_log(run / "trajectories.h5", scenario)

        status = in_child(work)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0, "the writer failed"
            shutil.rmtree(run)
            break
''')


@pytest.fixture(scope="module")
def killer(tmp_path_factory):
    """Path of KILLER_C compiled (skips off Linux, or without a C compiler)."""
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if not sys.platform.startswith("linux") or compiler is None:
        pytest.skip("needs Linux and a C compiler to interpose the C library's writes")
    folder = tmp_path_factory.mktemp("killer")
    (folder / "killer.c").write_text(KILLER_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "killer.so"), str(folder / "killer.c"), "-ldl"],
                   check=True, capture_output=True)
    return folder / "killer.so"


@pytest.mark.parametrize("scenario", ["create", "resume-closed-log", "resume-killed-log"])
def test_a_kill_at_any_write_leaves_a_log_the_next_resume_continues(tmp_path, killer, scenario):
    """SIGKILL instead of each write in turn of a run's first creation of its log, or of a
    resume (of a closed log, and of a killed writer's log, which is first copied): the log
    reads, and the next resume from the checkpoint of update 2 keeps every episode logged
    before it and appends."""
    from ssdinfluence.rundir import RunFiles, remove_temp_files

    child = (textwrap.dedent(inspect.getsource(writer_kwargs)) + textwrap.dedent(inspect.getsource(make_episode))
             + KILL_AT_EVERY_WRITE)
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path), scenario], capture_output=True, text=True,
                          env={**os.environ, "LD_PRELOAD": str(killer), "PYTHONDONTWRITEBYTECODE": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    runs = sorted(tmp_path.glob("killed-at-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(runs) >= 10, "too few writes: is the killer interposed?"
    kept = [] if scenario == "create" else [0, 1, 2, 3]  # logged under updates 0 and 1
    on_disk = {"create": {0}, "resume-closed-log": {4, 6}, "resume-killed-log": {4}}[scenario]
    seen = set()
    for run in runs:
        path = run / "trajectories.h5"
        remove_temp_files(RunFiles(run))
        assert [p.name for p in run.iterdir()] in ([], ["trajectories.h5"]), run.name
        state = file_digest(path) if path.exists() else None
        if state in seen:  # e.g. every kill while a copy was being made leaves the same file
            continue
        seen.add(state)
        if path.exists():  # what analyze and render read
            with TrajectoryReader(path) as reader:
                assert reader.num_episodes in on_disk, run.name
                for k in range(reader.num_episodes):
                    check_episode(reader, k)
        # The resume: drop what was logged after the checkpoint, then log episode 4 (of update
        # 2) again; a missing log is created for it.
        mode = "a" if path.exists() else "w"
        with TrajectoryWriter(path, mode=mode, **writer_kwargs()) as writer:
            if mode == "a":
                assert writer.truncate_after_update(1) == len(kept), run.name
            writer.append_episode(*make_episode(4))
        with TrajectoryReader(path) as reader:
            assert reader.num_episodes == len(kept) + 1, run.name
            for index, k in enumerate([*kept, 4]):
                check_episode(reader, k, index=index)


# ---------------------------------------------------------------------------- bad files
def test_clear_errors_for_files_that_are_not_trajectory_files(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(TrajectoryFileError, match="no such file") as error:
        TrajectoryReader(missing)
    assert error.value.path == str(missing) and str(missing) in str(error.value)
    assert isinstance(error.value, ValueError)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(TrajectoryFileError, match="not an HDF5 file"):
        TrajectoryReader(garbage)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(TrajectoryFileError, match="not an HDF5 file"):
        TrajectoryReader(empty)
    with pytest.raises(TrajectoryFileError, match="directory"):
        TrajectoryReader(tmp_path)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(TrajectoryFileError, match="not an ssdinfluence trajectory file"):
        TrajectoryReader(foreign)
    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format"], f.attrs["format_version"] = "ssdinfluence-trajectories", 99
    with pytest.raises(TrajectoryFileError, match="format_version 99"):
        TrajectoryReader(newer)

    truncated = tmp_path / "truncated.h5"
    with TrajectoryWriter(truncated, **writer_kwargs()) as writer:
        writer.append_episode(*make_episode(0))
    truncated.write_bytes(truncated.read_bytes()[:1500])
    with pytest.raises(TrajectoryFileError, match=str(truncated)):
        TrajectoryReader(truncated)

    stripped = tmp_path / "stripped.h5"
    with TrajectoryWriter(stripped, **writer_kwargs()) as writer:
        writer.append_episode(*make_episode(0))
    with h5py.File(stripped, "a") as f:
        del f["map/beams"]
    with pytest.raises(TrajectoryFileError, match=r"missing dataset.*map/beams"):
        TrajectoryReader(stripped)

    # The writer: appending to files that are not ours, or creating where it cannot.
    for path in (garbage, foreign):
        with pytest.raises(TrajectoryFileError, match=str(path)):
            TrajectoryWriter(path, mode="a", **writer_kwargs())
    with pytest.raises(TrajectoryFileError, match="cannot create"):
        TrajectoryWriter(tmp_path / "no" / "such" / "dir.h5", **writer_kwargs())
