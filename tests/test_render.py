"""Replays: frames from the logged map state, agents' views, influence arrows, videos, the CLI."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import PIL.Image
import PIL.ImageSequence
import pytest
from click.testing import CliRunner

import ssdinfluence
from ssdinfluence.cli import main
from ssdinfluence.envs import tiles
from ssdinfluence.render import (
    BACKGROUND,
    MissingExtraError,
    derive_observations,
    frame_layout,
    render_episode,
    render_frames,
    view_settings,
    write_video,
)
from ssdinfluence.trajectories import TrajectoryFileError, TrajectoryReader, TrajectoryWriter

# The colours of docs/environments.md's table, written out so a palette change cannot pass unnoticed.
SPEC_TILES = np.array([(0, 0, 0), (180, 180, 180), (0, 255, 0), (99, 156, 194), (113, 75, 24), (113, 75, 24)],
                      np.uint8)
SPEC_FIRE, SPEC_CLEAN = (255, 255, 0), (100, 255, 255)
SPEC_AGENTS = np.array([(0, 0, 255), (2, 81, 154), (204, 0, 204)], np.uint8)
N, HORIZON, EPISODES = 3, 25, 2


def record(directory, compat=None, seed=0):
    """Play EPISODES random Cleanup episodes; log them with views (obs.h5) and without
    (trajectories.h5), with made-up influence_pairs, as the trainer's recorder does."""
    env = ssdinfluence.make("cleanup", num_envs=1, num_agents=N, seed=seed, horizon=HORIZON, compat=compat)
    env_kwargs = {"horizon": HORIZON, **({"compat": compat} if compat else {})}
    directory.mkdir()
    writers = [TrajectoryWriter(directory / name, env_name=env.name, num_agents=N, num_actions=env.num_actions,
                                map_text=env.layout.text, palette=env.palette, config={"env_kwargs": env_kwargs},
                                store_observations=store, step_fields={"influence_pairs": ((N, N), np.float32)})
               for name, store in (("obs.h5", True), ("trajectories.h5", False))]
    rng = np.random.default_rng(seed)
    choices = [tiles.FIRE, tiles.CLEAN, tiles.MOVE_UP, tiles.MOVE_LEFT, tiles.TURN_CLOCKWISE]
    obs, _ = env.reset()
    steps = {name: [] for name in ("grid", "positions", "orientations", "beams", "observations", "actions",
                                   "rewards", "influence_pairs")}
    for _ in range(EPISODES * HORIZON):
        for name, value in env.map_state([0]).items():
            steps[name].append(value[0])
        steps["observations"].append(obs[0].copy())
        actions = rng.choice(choices, size=(1, N))
        pairs = rng.exponential(1.0, (N, N)) * (rng.random((N, N)) < 0.5)
        np.fill_diagonal(pairs, 0.0)
        steps["actions"].append(actions[0])
        steps["influence_pairs"].append(pairs.astype(np.float32))
        obs, rewards, _, truncated, info = env.step(actions)
        steps["rewards"].append(rewards[0].copy())
        if truncated[0]:
            episode = {"env_index": 0, "env_steps": 0, "update": 0, "returns": info["episode_returns"][0]}
            for writer in writers:
                writer.append_episode({k: np.stack(v) for k, v in steps.items()}, episode)
            steps = {k: [] for k in steps}
    for writer in writers:
        writer.close()
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return record(tmp_path_factory.mktemp("logs") / "run")


def spec_map(episode):
    """[T, H, W, 3] colour of every cell from the spec's table (not from the code under test)."""
    T = len(episode["grid"])
    colours = SPEC_TILES[episode["grid"]]
    colours[episode["beams"] == tiles.BEAM_FIRE] = SPEC_FIRE
    colours[episode["beams"] == tiles.BEAM_CLEAN] = SPEC_CLEAN
    rows, cols = episode["positions"][..., 0], episode["positions"][..., 1]
    colours[np.arange(T)[:, None], rows, cols] = SPEC_AGENTS
    return colours


# ---------------------------------------------------------------------------- the map
def test_map_frames_show_the_logged_state_in_the_spec_palette(run_dir):
    path = run_dir / "trajectories.h5"
    with TrajectoryReader(path) as reader:
        episode = reader.episode(1)
        np.testing.assert_array_equal(reader.palette[:tiles.AGENT_BASE + N],
                                      np.concatenate([SPEC_TILES, [SPEC_FIRE, SPEC_CLEAN], SPEC_AGENTS]))
        frames = render_episode(reader, 1, scale=4)
        np.testing.assert_array_equal(frames, reader.frames(1, scale=4))  # the reader's own rendering
    assert frames.shape == (HORIZON, 25 * 4, 18 * 4, 3) and frames.dtype == np.uint8
    assert (episode["beams"] == tiles.BEAM_FIRE).any() and (episode["beams"] == tiles.BEAM_CLEAN).any()
    # The centre pixel (2, 2) of every 4x4 cell has the cell's colour: tiles, beams, agents.
    np.testing.assert_array_equal(frames[:, 2::4, 2::4], spec_map(episode))
    # The facing mark: a darker edge on the side the agent faces, its own colour opposite.
    edge = {tiles.UP: ((0, 2), (3, 2)), tiles.DOWN: ((3, 2), (0, 2)),
            tiles.LEFT: ((2, 0), (2, 3)), tiles.RIGHT: ((2, 3), (2, 0))}
    for t in range(HORIZON):
        for k, ((r, c), o) in enumerate(zip(episode["positions"][t], episode["orientations"][t], strict=True)):
            (fr, fc), (br, bc) = edge[int(o)]
            np.testing.assert_array_equal(frames[t, 4 * r + fr, 4 * c + fc], SPEC_AGENTS[k] // 2)
            np.testing.assert_array_equal(frames[t, 4 * r + br, 4 * c + bc], SPEC_AGENTS[k])


def test_frame_slices_follow_python_slice_rules(run_dir):
    full = render_episode(run_dir, -1, scale=2)
    np.testing.assert_array_equal(render_episode(run_dir, -1, 5, 12, scale=2), full[5:12])
    np.testing.assert_array_equal(render_episode(run_dir / "trajectories.h5", 1, -3, scale=2), full[-3:])
    assert render_episode(run_dir, 0, 9, 4, scale=2).shape == (0, 50, 36, 3)


# ---------------------------------------------------------------------------- views
def test_views_panel_has_the_documented_layout_and_the_agents_views(run_dir):
    layout = frame_layout((25, 18), N, scale=8, views=True)
    # v = 4 px a view cell, b = 2 px border, tiles 64 px and 2 px apart: 3 rows fit 200 px, 1 column.
    assert layout.shape == (200, 144 + 2 + 66) and (layout.view_scale, layout.border) == (4, 2)
    np.testing.assert_array_equal(layout.view_origins, [[4, 148], [70, 148], [136, 148]])
    assert frame_layout((16, 38), 5, scale=8, views=True).shape == (128, 304 + 2 + 5 * 66)  # Harvest: 1 row

    frames = render_episode(run_dir / "obs.h5", 0, views=True)
    with TrajectoryReader(run_dir / "obs.h5") as reader:
        observations = reader.episode(0)["observations"]
        np.testing.assert_array_equal(frames[:, :200, :144], reader.frames(0))
    assert frames.shape == (HORIZON, 200, 212, 3)
    for k, (y, x) in enumerate(layout.view_origins):
        scaled = observations[:, k].repeat(4, axis=1).repeat(4, axis=2)
        np.testing.assert_array_equal(frames[:, y:y + 60, x:x + 60], scaled)
        for row, col in ((y - 1, x + 30), (y + 60, x), (y + 10, x - 2), (y + 59, x + 61)):  # its border
            assert (frames[:, row, col] == SPEC_AGENTS[k]).all()
    assert (frames[:, :, 144:146] == BACKGROUND).all() and (frames[:, :2, 146:] == BACKGROUND).all()


@pytest.mark.parametrize("compat", [None, "reference"])
def test_views_derived_from_the_map_state_equal_the_stored_observations(tmp_path, run_dir, compat):
    directory = run_dir if compat is None else record(tmp_path / "run", compat=compat, seed=1)
    with TrajectoryReader(directory / "obs.h5") as reader:
        settings = view_settings(reader)
        assert settings == ((True, False) if compat is None else (False, True))  # (draw_beams, view_flip)
        for k in range(EPISODES):
            episode = reader.episode(k)
            state = [episode[name] for name in ("grid", "positions", "orientations", "beams")]
            derived = derive_observations(*state, reader.palette, draw_beams=settings[0], view_flip=settings[1])
            np.testing.assert_array_equal(derived, episode["observations"])
            for draw_beams, view_flip in ((not settings[0], settings[1]), (settings[0], not settings[1])):
                other = derive_observations(*state, reader.palette, draw_beams=draw_beams, view_flip=view_flip)
                assert not np.array_equal(other, derived)  # both settings matter on this log
    # A log without observations gets the same views, derived.
    np.testing.assert_array_equal(render_episode(directory, 1, views=True, scale=2),
                                  render_episode(directory / "obs.h5", 1, views=True, scale=2))


# ---------------------------------------------------------------------------- influence
def open_room(T):
    """9x9 room: agent 0 at (1, 1), agent 1 six cells right, agent 2 six cells down; all face UP."""
    grid = np.zeros((T, 9, 9), np.uint8)
    grid[:, [0, -1], :] = tiles.WALL
    grid[:, :, [0, -1]] = tiles.WALL
    positions = np.tile(np.array([[1, 1], [1, 7], [7, 1]], np.int16), (T, 1, 1))
    return grid, positions, np.zeros((T, 3), np.int8), np.zeros((T, 9, 9), np.uint8), tiles.make_palette(3)


def test_influence_arrows_join_the_right_agents_with_widths_following_influence():
    state = open_room(2)
    pairs = np.zeros((2, 3, 3), np.float32)
    pairs[0, 0, 1], pairs[0, 0, 2] = 1.0, 0.3  # agent 0 influences 1 strongly, 2 weakly
    pairs[0, 1, 0] = 0.01  # under the 5% threshold: no arrow
    plain = render_frames(*state, scale=8)
    frames = render_frames(*state, scale=8, influence_pairs=pairs)
    np.testing.assert_array_equal(frames[1], plain[1])  # no influence, no arrows
    changed = (frames[0] != plain[0]).any(axis=-1)
    assert changed.sum() > 100 and (frames[0][changed] == SPEC_AGENTS[0]).all()  # only agent 0's arrows
    for r, c in ((1, 1), (1, 7), (7, 1)):  # agents stay on top of the arrows
        assert not changed[8 * r:8 * r + 8, 8 * c:8 * c + 8].any()
    # Agent 0 -> 1 runs right along cell row 1 (x 16..55), agent 0 -> 2 down cell column 1 (y 16..55):
    # measure each arrow's thickness across its length.
    across_right = changed[:24, 16:56].sum(axis=0)
    across_down = changed[16:56, :24].sum(axis=1)
    assert across_right[:24].tolist() == [5] * 24  # full width at the largest influence: scale // 2 + 1
    assert across_down[:24].tolist() == [2] * 24  # round(5 * 0.3)
    assert across_right[24:].max() > 5 and across_down[24:].max() > 2  # heads at the influencee's end
    # influence_max sets the full width: at twice the largest influence the strongest arrow is 3 px.
    halved = render_frames(*state, scale=8, influence_pairs=pairs, influence_max=2.0)[0] != plain[0]
    assert halved.any(axis=-1)[:24, 16:40].sum(axis=0).tolist() == [3] * 24
    # Two arrows between the same agents run side by side, each in its influencer's colour.
    pairs[0, 1, 0] = 1.0
    middle = render_frames(*state, scale=8, influence_pairs=pairs)[0, :24, 24:48]  # between the heads
    for k in (0, 1):
        assert (middle == SPEC_AGENTS[k]).all(axis=-1).sum(axis=0).tolist() == [5] * 24


def test_influence_on_a_logged_episode(run_dir):
    frames = render_episode(run_dir, 0, influence=True)
    plain = render_episode(run_dir, 0)
    with TrajectoryReader(run_dir / "trajectories.h5") as reader:
        episode = reader.episode(0)
    pairs = episode["influence_pairs"]
    strong = pairs >= 0.05 * pairs.max()
    drawn = 0
    for t in range(HORIZON):
        changed = (frames[t] != plain[t]).any(axis=-1)
        colours = {tuple(c) for c in np.unique(frames[t][changed], axis=0)}
        assert colours <= {tuple(SPEC_AGENTS[k]) for k in range(N) if strong[t, k].any()}  # influencers' arrows
        drawn += changed.any()
    assert drawn == strong.any(axis=(1, 2)).sum() > HORIZON // 2
    # A slice is scaled by the whole episode's largest influence, so it equals the full render's frames.
    np.testing.assert_array_equal(render_episode(run_dir, 0, 3, 9, influence=True), frames[3:9])


# ---------------------------------------------------------------------------- videos
def test_gif_round_trip_is_lossless(run_dir, tmp_path):
    frames = render_episode(run_dir, 0, scale=3, views=True, influence=True)
    path = write_video(frames, tmp_path / "replay.gif", fps=10)
    back = iio.imread(path, index=None)[..., :3]
    # GIF stores identical consecutive frames once, for longer.
    distinct = [0] + [t for t in range(1, len(frames)) if not np.array_equal(frames[t], frames[t - 1])]
    assert len(distinct) > HORIZON // 2
    np.testing.assert_array_equal(back, frames[distinct])
    with PIL.Image.open(path) as gif:  # 10 fps: 100 ms a step, merged frames included
        assert sum(frame.info["duration"] for frame in PIL.ImageSequence.Iterator(gif)) == 100 * len(frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay.gif"]  # no temporary file left
    # Frames with more than 256 colours are quantised by pillow instead.
    noise = np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    assert iio.imread(write_video(noise, tmp_path / "noise.gif"), index=None).shape[:3] == (3, 20, 24)


def test_mp4(run_dir, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = render_episode(run_dir, 0, scale=3)  # 75 x 54: padded to even sizes
    path = write_video(frames, tmp_path / "replay.mp4", fps=25)
    back = iio.imread(path, plugin="FFMPEG", index=None)  # lossy: compare sizes only
    assert back.shape[:3] == (HORIZON, 76, 54)


def test_write_video_errors(tmp_path, monkeypatch):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown video format '.png', use .gif or .mp4"):
        write_video(frames, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"frames must be \[T >= 1, H, W, 3\] uint8"):
        write_video(frames[:0], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="fps must be a positive number"):
        write_video(frames, tmp_path / "a.gif", fps=0)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r'pip install "ssdinfluence\[mp4\]"'):
        write_video(frames, tmp_path / "a.mp4")
    monkeypatch.setitem(sys.modules, "imageio", None)
    with pytest.raises(MissingExtraError, match=r'needs imageio.*pip install "ssdinfluence\[viz\]"'):
        write_video(frames, tmp_path / "a.gif")
    assert list(tmp_path.iterdir()) == []


def test_library_errors(run_dir, tmp_path):
    with pytest.raises(TrajectoryFileError, match="no such run directory"):
        render_episode(tmp_path / "missing")
    with pytest.raises(IndexError, match="episode 2 out of range: the log holds 2 episodes"):
        render_episode(run_dir, 2)
    grid, positions, orientations, beams, palette = open_room(2)
    with pytest.raises(ValueError, match=r"positions has shape \(2, 3\), expected 3 dimensions"):
        render_frames(grid, positions[..., 0], orientations, beams, palette)
    with pytest.raises(ValueError, match="positions lie outside the 9x9 map"):
        render_frames(grid, positions + 8, orientations, beams, palette)
    with pytest.raises(ValueError, match=r"palette has shape \(10, 3\), expected \[K >= 11, 3\]"):
        render_frames(grid, positions, orientations, beams, palette[:10])
    with pytest.raises(ValueError, match=r"influence_pairs has shape \(2, 3, 2\), expected \(2, 3, 3\)"):
        render_frames(grid, positions, orientations, beams, palette, influence_pairs=np.zeros((2, 3, 2)))


def test_render_imports_neither_torch_nor_imageio():
    code = ("import sys, ssdinfluence.render; "
            "bad = [m for m in ('torch', 'imageio', 'click') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- command line
def invoke(*args):
    return CliRunner().invoke(main, ["render", *map(str, args)], env={"COLUMNS": "200"})


def test_cli_writes_a_gif(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(run_dir, "-e", "-1", "-o", "replay.gif", "--frames", "2:9", "--views", "--influence",
                    "--scale", "2", "--fps", "5")
    assert result.exit_code == 0, result.output
    assert "wrote replay.gif: episode 1, steps 2:9 (7 frames of 73x50 px)" in result.output
    expected = render_episode(run_dir, 1, 2, 9, scale=2, views=True, influence=True)
    back = iio.imread(tmp_path / "replay.gif", index=None)
    assert back.shape[1:3] == expected.shape[1:3] == frame_layout((25, 18), N, scale=2, views=True).shape
    result = invoke(run_dir / "trajectories.h5", "-o", "all.gif", "--frames", "-4:")
    assert result.exit_code == 0 and f"steps {HORIZON - 4}:{HORIZON} (4 frames" in result.output


def test_cli_errors_exit_2_and_write_nothing(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no-log").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trajectories.h5").write_text("not hdf5")
    (tmp_path / "empty").mkdir()
    TrajectoryWriter(tmp_path / "empty" / "trajectories.h5", env_name="cleanup", num_agents=1, num_actions=9,
                     map_text=ssdinfluence.envs.CLEANUP_MAP, palette=tiles.make_palette(1)).close()
    cases = [
        (["missing", "-o", "r.gif"], "no such run directory or trajectory file"),
        (["no-log", "-o", "r.gif"], "no trajectories.h5 in this run directory"),
        (["bad", "-o", "r.gif"], "not an HDF5 file"),
        (["empty", "-o", "r.gif"], "the log holds no episodes"),
        ([run_dir, "-e", "7", "-o", "r.gif"], "episode 7 out of range: the log holds 2 episodes"),
        ([run_dir, "-e", "-3", "-o", "r.gif"], "episode -3 out of range"),
        ([run_dir, "--frames", "3", "-o", "r.gif"], "'3' is not a slice of steps"),
        ([run_dir, "--frames", "1:2:3", "-o", "r.gif"], "is not a slice of steps"),
        ([run_dir, "--frames", "x:", "-o", "r.gif"], "is not a slice of steps"),
        ([run_dir, "--frames", "9:4", "-o", "r.gif"], "9:4 selects no steps of episode 0 (25 steps)"),
        ([run_dir, "--frames", "30:", "-o", "r.gif"], "selects no steps"),
        ([run_dir, "-o", "r.png"], "unknown video format '.png'"),
        ([run_dir, "-o", "nowhere/r.gif"], "directory 'nowhere' does not exist"),
        ([run_dir, "-o", "r.gif", "--scale", "0"], "--scale"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    result = invoke(run_dir, "-o", "r.mp4")
    assert result.exit_code == 2 and 'pip install "ssdinfluence[mp4]"' in result.output
    monkeypatch.setitem(sys.modules, "imageio", None)
    result = invoke(run_dir, "-o", "r.gif")
    assert result.exit_code == 2 and 'pip install "ssdinfluence[viz]"' in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "empty", "no-log"]


def test_cli_influence_needs_a_log_with_influence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = ssdinfluence.make("harvest", num_agents=1, horizon=2)
    with TrajectoryWriter(tmp_path / "trajectories.h5", env_name=env.name, num_agents=1, num_actions=env.num_actions,
                          map_text=env.layout.text, palette=env.palette) as writer:
        env.reset()
        state = env.map_state([0])
        writer.append_episode({**{k: np.repeat(v, 2, axis=0) for k, v in state.items()},
                               "actions": np.zeros((2, 1), np.int8), "rewards": np.zeros((2, 1))},
                              {"env_index": 0, "env_steps": 2, "update": 0, "returns": np.zeros(1)})
    result = invoke(tmp_path, "--influence", "-o", "r.gif")
    assert result.exit_code == 2 and "the log has no influence_pairs" in result.output
    assert not (tmp_path / "r.gif").exists()
    result = invoke(tmp_path, "-o", "r.gif")
    assert result.exit_code == 0 and "2 frames" in result.output
