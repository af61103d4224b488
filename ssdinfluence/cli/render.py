"""Replay command: ``ssdinfluence render RUN_DIR --episode K -o replay.gif``."""

from __future__ import annotations

import time
from pathlib import Path

import click


class FrameSlice(click.ParamType):
    """``a:b`` in Python slice style, either side optional (``100:``, ``:50``, ``-200:``): (start, stop)."""

    name = "a:b"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            start, stop = (int(p) if p.strip() else None for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a slice of steps: use a:b, a: or :b with integers (e.g. 0:200)",
                      param, ctx)
        return (0 if start is None else start), stop


@click.command("render")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-e", "--episode", type=int, default=0, show_default=True,
              help="Episode index in the log; negative counts from the end (-1: the last).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Video to write: .gif (extra viz) or .mp4 (extra mp4).")
@click.option("--frames", "frame_slice", type=FrameSlice(), default=None,
              help="Steps a:b of the episode (Python slice, either side optional).  [default: all]")
@click.option("--views/--no-views", default=False, show_default=True,
              help="Show each agent's 15x15 view beside the map.")
@click.option("--influence/--no-influence", default=False, show_default=True,
              help="Draw arrows between agents, as wide as the influence between them (influence, moa, comm runs).")
@click.option("--scale", type=click.IntRange(1, 64), default=8, show_default=True, help="Pixels per map cell.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Frames (env steps) per second.")
def render(run_dir, episode, output, frame_slice, views, influence, scale, fps):
    """Render a logged episode of RUN_DIR (a run directory or a trajectories.h5) to a GIF or MP4.

    Draws the whole map from the logged state: tiles, agents with the edge they face, beams;
    with --views each agent's view beside it, with --influence the influence between agents.
    """
    from .. import render as replay  # here: --help must not load the kernels and h5py

    try:
        replay.check_video_support(output)
    except replay.MissingExtraError as error:
        raise click.UsageError(str(error)) from error
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="-o/--output") from error
    if not output.parent.is_dir():
        raise click.BadParameter(f"directory {str(output.parent)!r} does not exist", param_hint="-o/--output")
    try:
        reader = replay.open_log(run_dir)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="RUN_DIR") from error
    with reader:
        try:
            k = replay.episode_index(reader, episode)
        except IndexError as error:
            raise click.BadParameter(str(error), param_hint="-e/--episode") from error
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="RUN_DIR") from error
        length = int(reader.episodes()["length"][k])
        start, stop = frame_slice or (0, None)
        lo, hi, _ = slice(start, stop).indices(length)
        if hi <= lo:
            raise click.BadParameter(f"{start}:{'' if stop is None else stop} selects no steps of episode {k} "
                                     f"({length} steps)", param_hint="--frames")
        began = time.perf_counter()
        try:
            frames = replay.render_episode(reader, k, start, stop, scale=scale, views=views, influence=influence)
        except ValueError as error:  # e.g. --influence on a log without influence_pairs
            raise click.UsageError(str(error)) from error
    replay.write_video(frames, output, fps=fps)
    seconds = time.perf_counter() - began
    click.echo(f"wrote {output}: episode {k}, steps {lo}:{hi} ({len(frames)} frames of "
               f"{frames.shape[2]}x{frames.shape[1]} px) in {seconds:.1f} s")
