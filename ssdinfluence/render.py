"""Replays of logged episodes: the whole map, the agents' own views and the influence between them.

Frames are drawn from the logged map state of :mod:`ssdinfluence.trajectories` (``grid``,
``positions``, ``orientations``, ``beams``) through the log's palette, so a replay shows each
state s_t as ``env.render`` showed it; :func:`write_video` turns them into a GIF or MP4.

    from ssdinfluence.render import render_episode, write_video
    frames = render_episode("runs/cleanup-influence-ppo-s0", episode=-1, views=True, influence=True)
    write_video(frames, "replay.gif", fps=20)

Frame layout (s = ``scale``, H x W map, N agents; pixel rows and columns from the top left):

* **map** ``[H*s, W*s]`` at the top left, as :meth:`TrajectoryReader.frames` draws it:
  tiles, this step's beams, agent k in its colour with a darker mark on the edge it faces.
* **views** (``views=True``): agent k's 15x15 view (what it observed in s_t) at
  ``v = max(1, s // 2)`` pixels per cell inside a border of ``b = max(1, v // 2)`` pixels in
  agent k's colour. These tiles, ``15 v + 2 b`` pixels wide and ``b`` apart, fill a panel to
  the right of the map column by column: ``rows = max(1, min(N, (H*s - b) // (15 v + 3 b)))``
  (as many as the map's height holds), agent k in row ``k % rows`` and column ``k // rows``.
  A frame is then ``max(H*s, b + rows (15 v + 3 b))`` by ``W*s + b + cols (15 v + 3 b)``
  pixels, ``cols = ceil(N / rows)``; :func:`frame_layout` gives the sizes and positions.
  Pixels outside the map and the views are :data:`BACKGROUND`.
* **influence** (``influence=True``): an arrow from agent k to agent j, in k's colour, for every
  pair with ``pairs[t, k, j] >= threshold * m`` (m: the largest influence between two different
  agents in the episode, or ``influence_max``); its width is
  ``max(1, floor((s // 2 + 1) * pairs[t, k, j] / m + 1/2))`` pixels, its head sits at j's cell, and
  the arrows k -> j and j -> k run side by side. Weaker arrows are drawn first and the agents'
  cells over them all.

Speed (``bench/render_speed.py``, 2-core laptop CPU, 1000-step Cleanup episode, 5 agents,
scale 8, about 13 arrows a step): render 0.10 ms a frame (map), 0.27 (with views), 0.72
(views and influence); GIF encoding 0.45-0.85 ms a frame; so a 1000-step GIF takes 0.5 s
(map only) to 1.6 s (views and influence).

This module imports numpy and the env's own code (never torch); imageio is imported only
by :func:`write_video`, which raises :class:`MissingExtraError` naming the extra to install
(``pip install "ssdinfluence[viz]"`` for GIF, ``"ssdinfluence[mp4]"`` for MP4).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .envs import core, tiles
from .envs.base import MAP_FIELDS, BatchedEnv, map_codes, positive_int, render_frame
from .rundir import DiskFullError, is_disk_full
from .trajectories import TrajectoryFileError, TrajectoryReader

__all__ = [
    "BACKGROUND", "INFLUENCE_THRESHOLD", "VIDEO_SUFFIXES", "FrameLayout", "MissingExtraError",
    "check_video_support", "derive_observations", "episode_index", "frame_layout", "open_log",
    "render_episode", "render_frames", "view_settings", "write_video",
]

BACKGROUND = np.array([48, 48, 48], np.uint8)  # dark grey: tells the panel apart from black floor
INFLUENCE_THRESHOLD = 0.05  # arrows below 5% of the episode's largest influence are left out
VIDEO_SUFFIXES = (".gif", ".mp4")
_EXTRAS = {".gif": "viz", ".mp4": "mp4"}


class MissingExtraError(ImportError):
    """Writing a video needs an optional extra that is not installed; the message says which."""


# ====================================================================== layout
@dataclass(frozen=True)
class FrameLayout:
    """Where things go in a frame (see the module docstring).

    Attributes: ``shape`` ((H', W') of a frame in pixels), ``map_shape`` ((H*s, W*s)),
    ``scale`` (s, pixels per map cell), ``view_scale`` (v, pixels per view cell), ``border``
    (b, pixels of the coloured frame around a view), ``view_origins`` ([N, 2] int64 (row, col)
    pixel of the top-left cell of agent k's view, inside its border; [0, 2] without views).
    """

    shape: tuple
    map_shape: tuple
    scale: int
    view_scale: int
    border: int
    view_origins: np.ndarray


def frame_layout(map_shape, num_agents: int, scale: int = 8, views: bool = False) -> FrameLayout:
    """The :class:`FrameLayout` of an ``(H, W)`` map with ``num_agents`` agents at ``scale``."""
    scale = positive_int("scale", scale)
    H, W = (int(n) for n in map_shape)
    map_px = (H * scale, W * scale)
    view_scale = max(1, scale // 2)
    border = max(1, view_scale // 2)
    if not views:
        return FrameLayout(map_px, map_px, scale, view_scale, border, np.zeros((0, 2), np.int64))
    stride = tiles.VIEW_SIZE * view_scale + 3 * border  # one tile and the gap after it
    rows = max(1, min(num_agents, (map_px[0] - border) // stride))
    cols = math.ceil(num_agents / rows)
    k = np.arange(num_agents)
    origins = np.stack([border + (k % rows) * stride + border,
                        map_px[1] + border + (k // rows) * stride + border], axis=1).astype(np.int64)
    shape = (max(map_px[0], border + rows * stride), map_px[1] + border + cols * stride)
    return FrameLayout(shape, map_px, scale, view_scale, border, origins)


# ====================================================================== arrays -> frames
def render_frames(grid, positions, orientations, beams, palette, *, scale: int = 8, observations=None,
                  influence_pairs=None, influence_max: float | None = None,
                  threshold: float = INFLUENCE_THRESHOLD) -> np.ndarray:
    """RGB frames of T logged states, ``[T, H', W', 3] uint8`` (layout in the module docstring).

    Args:
        grid: ``[T, H, W]`` uint8 tile codes (:mod:`ssdinfluence.envs.tiles`).
        positions: ``[T, N, 2]`` integers, the agents' (row, col).
        orientations: ``[T, N]`` integers in 0..3 (UP, RIGHT, DOWN, LEFT).
        beams: ``[T, H, W]`` uint8, 0 none, 1 fire, 2 clean.
        palette: ``[K, 3]`` uint8 colour of every view code, K >= 8 + N (``reader.palette``).
        scale: pixels per map cell.
        observations: ``[T, N, 15, 15, 3]`` uint8 views to show beside the map (None: map only).
        influence_pairs: ``[T, N, N]`` float, ``[t, k, j]`` = influence of agent k on agent j;
            draws the influence arrows (None: no arrows).
        influence_max: the influence drawn at full width (default: the largest off-diagonal
            value of ``influence_pairs``); pass the whole episode's when rendering a slice.
        threshold: arrows below ``threshold * influence_max`` are not drawn.

    Raises ``ValueError`` naming the argument whose shape or values do not fit.
    """
    grid = _array("grid", grid, 3, np.uint8)
    T, H, W = grid.shape
    positions = _array("positions", positions, 3).astype(np.int64)
    N = positions.shape[1]
    orientations = _array("orientations", orientations, 2)
    beams = _array("beams", beams, 3, np.uint8)
    palette = _array("palette", palette, 2, np.uint8)
    _expect("positions", positions, (T, N, 2))
    _expect("orientations", orientations, (T, N))
    _expect("beams", beams, (T, H, W))
    if palette.shape[1] != 3 or len(palette) < tiles.AGENT_BASE + N:
        raise ValueError(f"palette has shape {palette.shape}, expected [K >= {tiles.AGENT_BASE + N}, 3]")
    if grid.size and grid.max() > tiles.STREAM:
        raise ValueError(f"grid holds codes above {tiles.STREAM} (tile codes 0..{tiles.STREAM} only)")
    if beams.size and beams.max() > tiles.BEAM_CLEAN:
        raise ValueError("beams must be 0 (none), 1 (fire) or 2 (clean)")
    if positions.size and (positions.min() < 0 or positions[..., 0].max() >= H or positions[..., 1].max() >= W):
        raise ValueError(f"positions lie outside the {H}x{W} map")
    if orientations.size and (orientations.min() < 0 or orientations.max() > 3):
        raise ValueError("orientations must be in 0..3")
    if observations is not None:
        observations = _array("observations", observations, 5, np.uint8)
        _expect("observations", observations, (T, N, tiles.VIEW_SIZE, tiles.VIEW_SIZE, 3))
    if influence_pairs is not None:
        influence_pairs = _array("influence_pairs", influence_pairs, 3)
        _expect("influence_pairs", influence_pairs, (T, N, N))
    layout = frame_layout((H, W), N, scale, views=observations is not None)

    out = np.empty((T, *layout.shape, 3), np.uint8)
    if observations is not None:
        # Background and view borders are the same in every frame: copy one template frame
        # (several times faster than filling each frame with a colour).
        out[:] = _panel_template(layout, palette)
    Hs, Ws = layout.map_shape
    codes = map_codes(grid, positions, beams)
    for t in range(T):
        out[t, :Hs, :Ws] = render_frame(codes[t], positions[t], orientations[t], palette, layout.scale)
    if influence_pairs is not None:
        if influence_max is None:
            influence_max = _off_diagonal_max(influence_pairs)
        _draw_influence(out[:, :Hs, :Ws], positions, influence_pairs, palette, layout.scale,
                        float(influence_max), float(threshold))
    if observations is not None:
        _draw_views(out, observations, layout)
    return out


def derive_observations(grid, positions, orientations, beams, palette, *, draw_beams: bool = True,
                        view_flip: bool = False) -> np.ndarray:
    """The agents' 15x15 views of T logged states, ``[T, N, 15, 15, 3] uint8``, by the env's own code.

    Runs the env's observation kernel with the T states as a batch, so the views equal what
    the agents observed (``draw_beams`` and ``view_flip`` as the env had them, see
    :func:`view_settings`). Inputs as in :func:`render_frames`.
    """
    grid = np.ascontiguousarray(grid, np.uint8)
    T, H, W = grid.shape
    # The env's own dtypes, so Numba reuses the kernel it compiled (and cached) for the env.
    positions = np.ascontiguousarray(positions, np.int32)
    orientations = np.ascontiguousarray(orientations, np.int8)
    beams = np.ascontiguousarray(beams, np.uint8)
    palette = np.ascontiguousarray(palette, np.uint8)
    N = positions.shape[1]
    R = tiles.VIEW_RADIUS
    view = np.zeros((T, H + 2 * R, W + 2 * R), np.uint8)  # its floor border stands for "outside"
    obs = np.zeros((T, N, tiles.VIEW_SIZE, tiles.VIEW_SIZE, 3), np.uint8)
    visible = np.zeros((T, N, N), np.bool_)
    if T:
        core.observe_kernel(grid, positions, orientations, beams, view, palette, bool(draw_beams),
                            bool(view_flip), obs, visible)
    return obs


# ====================================================================== logs -> frames
def open_log(source) -> TrajectoryReader:
    """A :class:`TrajectoryReader` of a run directory (its ``trajectories.h5``) or a trajectory file.

    Raises :class:`~ssdinfluence.trajectories.TrajectoryFileError` (a ``ValueError``) when the
    path does not exist, a directory holds no ``trajectories.h5``, or the file is unusable.
    """
    path = Path(source)
    if not path.exists():
        raise TrajectoryFileError(path, "no such run directory or trajectory file")
    if path.is_dir():
        if not (path / "trajectories.h5").exists():
            raise TrajectoryFileError(path, "no trajectories.h5 in this run directory (was it trained with "
                                            "--log-trajectories ''?)")
        path = path / "trajectories.h5"
    return TrajectoryReader(path)


def episode_index(reader: TrajectoryReader, episode: int) -> int:
    """``episode`` (negative counts from the end) as an index in ``0..E-1``.

    Raises ``ValueError`` if the log holds no episodes, ``IndexError`` if ``episode`` is out of
    range and ``TypeError`` if it is not an integer.
    """
    if isinstance(episode, bool) or not isinstance(episode, (int, np.integer)):
        raise TypeError(f"episode must be an integer, got {episode!r}")
    count = reader.num_episodes
    if count == 0:
        raise ValueError(f"{reader.path}: the log holds no episodes yet (an episode is logged when it ends)")
    if not -count <= episode < count:
        raise IndexError(f"episode {episode} out of range: the log holds {count} episode{'s' * (count != 1)}")
    return int(episode) % count


def view_settings(reader: TrajectoryReader) -> tuple[bool, bool]:
    """``(draw_beams, view_flip)`` of the env that played the log's episodes.

    Read from the ``env_kwargs`` of the log's config, as the trainer records it (the env's
    defaults where absent), by building that env. Raises ``ValueError`` if those settings do
    not make an env.
    """
    kwargs = dict(reader.config.get("env_kwargs") or {})
    kwargs.pop("map", None)  # the log's own map_text is authoritative
    try:
        env = BatchedEnv(reader.env_name, num_envs=1, num_agents=reader.num_agents, map=reader.map_text, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{reader.path}: cannot derive the agents' views, the log's env settings do not "
                         f"make an env ({error}); log with --log-observations to store them") from error
    return env.params.draw_beams, env.params.view_flip


def render_episode(source, episode: int = 0, start: int = 0, stop: int | None = None, *, scale: int = 8,
                   views: bool = False, influence: bool = False,
                   threshold: float = INFLUENCE_THRESHOLD) -> np.ndarray:
    """RGB frames of steps ``start:stop`` of a logged episode, ``[T', H', W', 3] uint8``.

    Args:
        source: a :class:`TrajectoryReader` (left open), a ``trajectories.h5`` path or a run
            directory holding one.
        episode: episode index, negative counts from the end.
        start, stop: Python slice bounds within the episode (steps; empty slices give T' = 0).
        scale: pixels per map cell.
        views: show each agent's 15x15 view beside the map: the stored observations if the
            log has them, else derived from the map state (:func:`derive_observations`).
        influence: draw influence arrows from the log's ``influence_pairs`` ([T, N, N],
            logged by the influence, MOA and communication models); full width at the
            episode's largest influence between two agents.
        threshold: arrows below this fraction of that largest influence are left out.

    Raises the errors of :func:`open_log` and :func:`episode_index`, and ``ValueError`` if
    ``influence`` is asked of a log without ``influence_pairs``.
    """
    with _reading(source) as reader:
        k = episode_index(reader, episode)
        if influence and "influence_pairs" not in reader.step_fields:
            raise ValueError(f"{reader.path}: the log has no influence_pairs (only the influence, moa and "
                             f"comm models log them)")
        data = reader.episode(k)
        lo, hi, _ = slice(start, stop).indices(len(data["actions"]))
        rows = slice(lo, max(lo, hi))
        state = [data[name][rows] for name in MAP_FIELDS]
        observations = pairs = influence_max = None
        if views:
            if reader.store_observations:
                observations = data["observations"][rows]
            else:
                draw_beams, view_flip = view_settings(reader)
                observations = derive_observations(*state, reader.palette, draw_beams=draw_beams,
                                                   view_flip=view_flip)
        if influence:
            pairs = data["influence_pairs"][rows]
            influence_max = _off_diagonal_max(data["influence_pairs"])
        return render_frames(*state, reader.palette, scale=scale, observations=observations,
                             influence_pairs=pairs, influence_max=influence_max, threshold=threshold)


# ====================================================================== frames -> file
def check_video_support(path) -> str:
    """The video suffix of ``path`` (``".gif"`` or ``".mp4"``) once its writer is known to be installed.

    Raises ``ValueError`` for any other suffix and :class:`MissingExtraError` when imageio (or,
    for MP4, imageio-ffmpeg) is missing.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"cannot write {Path(path).name!r}: unknown video format "
                         f"{suffix or '(no suffix)'!r}, use .gif or .mp4")
    hint = f'pip install "ssdinfluence[{_EXTRAS[suffix]}]"'
    try:
        import imageio  # noqa: F401
    except ImportError as error:
        raise MissingExtraError(f"writing {suffix} needs imageio, which is not installed: {hint}") from error
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as error:
            raise MissingExtraError(f"writing .mp4 needs imageio-ffmpeg, which is not installed: {hint}") from error
    return suffix


def write_video(frames, path, fps: float = 20.0) -> Path:
    """Write ``frames`` ([T, H, W, 3] uint8, T >= 1) to a GIF or an MP4 chosen by the suffix of ``path``.

    GIF: frames with at most 256 colours in all (rendered replays: the palette, the agents'
    darker facing marks and the background) are stored with one exact palette, so no frame
    is quantised (fast and lossless); identical consecutive frames become one longer frame. GIF delays are whole hundredths of a second, so ``fps`` above
    50 plays slower in most viewers. MP4: H.264 (yuv420p), frames padded to even sizes.

    The file appears only when complete (written to a temporary file, then renamed). Returns
    the path. Raises ``ValueError`` for bad frames, ``fps`` or suffix, and
    :class:`MissingExtraError` when the needed extra is not installed.
    """
    path = Path(path)
    suffix = check_video_support(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be [T >= 1, H, W, 3] uint8, got shape {frames.shape} dtype {frames.dtype}")
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    import imageio.v3 as iio

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{suffix}")
    try:
        if suffix == ".gif":
            options = {"extension": ".gif", "is_batch": True, "duration": round(1000 / fps), "loop": 0}
            paletted = _palettise(frames)
            if paletted is None:  # more than 256 colours: pillow quantises every frame
                iio.imwrite(tmp, frames, **options)
            else:
                indices, colours = paletted
                iio.imwrite(tmp, indices, palette=colours.tobytes(), **options)
        else:
            _write_mp4(tmp, frames, fps)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(error):
            raise DiskFullError(path) from error
        raise
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio.v2 as imageio

    # yuv420p stores colour at half resolution, so H.264 needs even sizes: repeat the last row/column.
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    if any(p[1] for p in pad):
        frames = np.pad(frames, pad, mode="edge")
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=float(fps), codec="libx264",
                            pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)


def _palettise(frames: np.ndarray, chunk: int = 64):
    """``(indices [T, H, W] uint8, colours [C, 3] uint8)`` with ``colours[indices] == frames``.

    None if the frames hold more than 256 colours. A 2^24-entry lookup table keyed by the
    packed RGB value maps every pixel in two vectorised passes per chunk of frames (far faster
    than sorting all pixels, or than pillow quantising each frame).
    """
    index_of = np.zeros(1 << 24, np.uint8)
    known = np.zeros(1 << 24, np.bool_)
    colours = []
    indices = np.empty(frames.shape[:3], np.uint8)
    for lo in range(0, len(frames), chunk):
        part = frames[lo:lo + chunk]
        keys = (part[..., 0].astype(np.uint32) << 16) | (part[..., 1].astype(np.uint32) << 8) | part[..., 2]
        present = np.zeros(1 << 24, np.bool_)
        present[keys] = True
        new = np.flatnonzero(present & ~known)
        if len(colours) + len(new) > 256:
            return None
        index_of[new] = np.arange(len(colours), len(colours) + len(new))
        known[new] = True
        colours.extend(new.tolist())
        indices[lo:lo + chunk] = index_of[keys]
    packed = np.array(colours, np.uint32)
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)
    return indices, rgb


# ====================================================================== drawing
def _panel_template(layout: FrameLayout, palette: np.ndarray) -> np.ndarray:
    """One frame [H', W', 3] uint8 of background with every agent's view border in its colour."""
    template = np.empty((*layout.shape, 3), np.uint8)
    template[:] = BACKGROUND
    b, size = layout.border, tiles.VIEW_SIZE * layout.view_scale
    for k, (y, x) in enumerate(layout.view_origins):
        template[y - b:y + size + b, x - b:x + size + b] = palette[tiles.AGENT_BASE + k]
    return template


def _draw_views(out: np.ndarray, observations: np.ndarray, layout: FrameLayout) -> None:
    """Paste each agent's view, scaled, inside its border (``out`` [T, H', W', 3], in place)."""
    v = layout.view_scale
    size = tiles.VIEW_SIZE * v
    for k, (y, x) in enumerate(layout.view_origins):
        for dy in range(v):  # every v-th pixel from (dy, dx) is one view cell: no scaled temporary
            for dx in range(v):
                out[:, y + dy:y + size:v, x + dx:x + size:v] = observations[:, k]


def _draw_influence(maps: np.ndarray, positions: np.ndarray, pairs: np.ndarray, palette: np.ndarray,
                    scale: int, influence_max: float, threshold: float) -> None:
    """Arrows k -> j on the map part of every frame (``maps`` [T, H*s, W*s, 3], drawn in place)."""
    if not influence_max > 0:
        return
    N = positions.shape[1]
    ratio = np.asarray(pairs, np.float64) / influence_max
    drawn = (ratio >= threshold) & ~np.eye(N, dtype=bool)
    max_width = scale // 2 + 1
    centres = positions * scale + (scale - 1) / 2  # [T, N, 2] pixel (row, col) of each agent's cell centre
    for t in np.flatnonzero(drawn.any(axis=(1, 2))):
        frame = maps[t]
        cells = [(r * scale, c * scale) for r, c in positions[t]]
        covered = [frame[r:r + scale, c:c + scale].copy() for r, c in cells]
        ks, js = np.nonzero(drawn[t])
        for i in np.argsort(ratio[t, ks, js], kind="stable"):  # strongest on top
            k, j = ks[i], js[i]
            width = max(1, int(max_width * min(1.0, ratio[t, k, j]) + 0.5))
            _draw_arrow(frame, centres[t, k], centres[t, j], width, palette[tiles.AGENT_BASE + k], scale)
        for (r, c), block in zip(cells, covered, strict=True):
            frame[r:r + scale, c:c + scale] = block


def _draw_arrow(frame: np.ndarray, start: np.ndarray, end: np.ndarray, width: int, colour: np.ndarray,
                scale: int) -> None:
    """A line ``width`` pixels wide from ``start`` towards ``end`` (pixel (row, col)), headed at end's cell edge.

    The arrow is shifted sideways (to its left as seen on the map), so k -> j and j -> k do not
    overlap. Drawn by colouring the pixels nearest to points sampled every half pixel along
    and across it, which leaves no holes.
    """
    (r0, c0), (r1, c1) = (float(x) for x in start), (float(x) for x in end)
    length = math.hypot(r1 - r0, c1 - c0)
    if length == 0.0:
        return
    ur, uc = (r1 - r0) / length, (c1 - c0) / length
    nr, nc = -uc, ur
    r0, c0 = r0 + nr * (width / 2 + 0.5), c0 + nc * (width / 2 + 0.5)
    # Distance from the start to the tip, which touches the edge of the target cell (a square).
    tip = length - (scale / 2 / max(abs(ur), abs(uc)) + 0.5)
    back, side, head_length = _head_samples(width, scale)
    steps = np.arange(0.0, tip - head_length + 0.25, 0.5)  # along the line (none if no room)
    offsets = np.arange(-(width - 1) / 2, (width - 1) / 2 + 0.25, 0.5)  # across it
    along = np.concatenate([np.repeat(steps, len(offsets)), tip - back])
    across = np.concatenate([np.tile(offsets, len(steps)), side])
    rows = np.floor(r0 + along * ur + across * nr + 0.5).astype(np.intp)
    cols = np.floor(c0 + along * uc + across * nc + 0.5).astype(np.intp)
    inside = (rows >= 0) & (rows < frame.shape[0]) & (cols >= 0) & (cols < frame.shape[1])
    frame[rows[inside], cols[inside]] = colour


@functools.lru_cache(maxsize=64)
def _head_samples(width: int, scale: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Points of a filled arrow head: (distance back from the tip, distance to the side, head length)."""
    head_length = max(3.0, 0.75 * scale)
    half_width = max(width / 2 + 1.5, 0.4 * scale)
    f = np.linspace(0.0, 1.0, int(2 * head_length) + 2)[:, None]  # 0 at the tip, 1 at the base
    spread = np.linspace(-1.0, 1.0, int(4 * half_width) + 2)[None, :]
    back = np.broadcast_to(f * head_length, (f.size, spread.size)).ravel()
    return back, (f * spread * half_width).ravel(), head_length


# ====================================================================== helpers
@contextlib.contextmanager
def _reading(source):
    """The reader of ``source``: the caller's own (left open) or one opened here (closed after)."""
    if isinstance(source, TrajectoryReader):
        yield source
        return
    reader = open_log(source)
    try:
        yield reader
    finally:
        reader.close()


def _off_diagonal_max(pairs: np.ndarray) -> float:
    """Largest influence between two different agents in ``pairs`` ([T, N, N]); 0 if none."""
    N = pairs.shape[-1]
    values = np.asarray(pairs)[..., ~np.eye(N, dtype=bool)]
    return float(values.max()) if values.size else 0.0


def _array(name: str, value, ndim: int, dtype=None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} has shape {array.shape}, expected {ndim} dimensions")
    if dtype is not None and array.dtype != dtype:
        if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
            raise ValueError(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype)}")
        array = array.astype(dtype)
    return array


def _expect(name: str, array: np.ndarray, shape: tuple) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
