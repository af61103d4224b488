"""Replay speed: render and encode a 1000-step episode as a GIF, with and without views and influence.

    python bench/render_speed.py                     # full table, JSON in bench/results/
    python bench/render_speed.py --envs cleanup --steps 200 --repeats 1

Each game plays one random episode (5 agents) logged to a temporary trajectories.h5 the way
training logs it: map state only (so the views are derived from it) and made-up
``influence_pairs`` (exponential, so about 12 of the 20 pairs a step clear the 5% arrow
threshold: more arrows than trained runs draw). "render" is ``render_episode`` on the open log
(reading, deriving views, drawing); "encode" is ``write_video`` to a GIF (palettising and
pillow's LZW), and to an MP4 when imageio-ffmpeg is installed. Best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import PIL

import ssdinfluence
from ssdinfluence.render import INFLUENCE_THRESHOLD, render_episode, write_video
from ssdinfluence.trajectories import TrajectoryReader, TrajectoryWriter

CONFIGS = [(False, False), (True, False), (False, True), (True, True)]  # (views, influence)


def record(name: str, steps: int, agents: int, path: Path) -> None:
    """One random-play episode of ``steps`` steps, logged with made-up influence between agents."""
    env = ssdinfluence.make(name, num_envs=1, num_agents=agents, seed=0, horizon=steps)
    rng = np.random.default_rng(0)
    env.reset()
    log = {k: [] for k in ("grid", "positions", "orientations", "beams", "actions", "rewards", "influence_pairs")}
    for _ in range(steps):
        for key, value in env.map_state([0]).items():
            log[key].append(value[0])
        actions = rng.integers(0, env.num_actions, (1, agents))
        pairs = rng.exponential(1.0, (agents, agents)).astype(np.float32)
        np.fill_diagonal(pairs, 0.0)
        log["actions"].append(actions[0])
        log["influence_pairs"].append(pairs)
        _, rewards, _, truncated, info = env.step(actions)
        log["rewards"].append(rewards[0].copy())
    assert truncated[0]
    with TrajectoryWriter(path, env_name=name, num_agents=agents, num_actions=env.num_actions,
                          map_text=env.layout.text, palette=env.palette, config={"env_kwargs": {"horizon": steps}},
                          step_fields={"influence_pairs": ((agents, agents), np.float32)}) as writer:
        writer.append_episode({k: np.stack(v) for k, v in log.items()},
                              {"env_index": 0, "env_steps": steps, "update": 0, "returns": info["episode_returns"][0]})


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(reader, directory: Path, name: str, views: bool, influence: bool, scale: int, repeats: int, mp4: bool):
    render_s, frames = best(lambda: render_episode(reader, 0, scale=scale, views=views, influence=influence),
                            repeats)
    gif = directory / f"{name}-{int(views)}{int(influence)}.gif"
    encode_s, _ = best(lambda: write_video(frames, gif), repeats)
    T = len(frames)
    pairs = reader.episode(0)["influence_pairs"]
    arrows = float((pairs >= INFLUENCE_THRESHOLD * pairs.max()).sum() / T) if influence else 0.0
    row = {"env": name, "views": views, "influence": influence, "steps": T, "scale": scale,
           "frame_px": [int(frames.shape[2]), int(frames.shape[1])], "arrows_per_step": arrows,
           "render_ms_per_frame": 1e3 * render_s / T, "gif_encode_ms_per_frame": 1e3 * encode_s / T,
           "gif_total_s": render_s + encode_s, "gif_mb": gif.stat().st_size / 1e6,
           "mp4_encode_ms_per_frame": None}
    if mp4:
        mp4_s, _ = best(lambda: write_video(frames, directory / "replay.mp4"), repeats)
        row["mp4_encode_ms_per_frame"] = 1e3 * mp4_s / T
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="cleanup,harvest")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "render_speed.json"))
    args = parser.parse_args()
    try:
        import imageio_ffmpeg

        mp4 = imageio_ffmpeg.__version__
    except ImportError:
        mp4 = None

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name in args.envs.split(","):
            path = directory / f"{name}.h5"
            record(name, args.steps, args.agents, path)
            with TrajectoryReader(path) as reader:
                render_episode(reader, 0, 0, 2, views=True, influence=True)  # load the compiled kernels
                rows += [measure(reader, directory, name, views, influence, args.scale, args.repeats, bool(mp4))
                         for views, influence in CONFIGS]

    print(f"{args.steps}-step episodes, {args.agents} agents, scale {args.scale}, best of {args.repeats}")
    print(f"{'env':8} {'views':>5} {'infl':>5} {'frame px':>9} {'arrows':>6} {'render ms/f':>11} "
          f"{'gif ms/f':>9} {'total s':>8} {'gif MB':>7} {'mp4 ms/f':>9}")
    for r in rows:
        mp4_ms = "-" if r["mp4_encode_ms_per_frame"] is None else f"{r['mp4_encode_ms_per_frame']:.2f}"
        print(f"{r['env']:8} {'yes' if r['views'] else 'no':>5} {'yes' if r['influence'] else 'no':>5} "
              f"{r['frame_px'][0]:4d}x{r['frame_px'][1]:<4d} {r['arrows_per_step']:6.1f} "
              f"{r['render_ms_per_frame']:11.2f} {r['gif_encode_ms_per_frame']:9.2f} {r['gif_total_s']:8.2f} "
              f"{r['gif_mb']:7.2f} {mp4_ms:>9}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"version": ssdinfluence.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "machine": platform.processor() or platform.machine(),
            "cores": numba.config.NUMBA_NUM_THREADS, "imageio_ffmpeg": mp4}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
