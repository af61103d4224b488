"""Episode trajectories in one HDF5 file (``trajectories.h5``): a crash-safe writer and a reader.

Whole episodes are appended (:meth:`TrajectoryWriter.append_episode`) and flushed at once, so
the file on disk only ever holds complete, indexed episodes: a run stopped by Ctrl-C, an
exception or ``kill -9`` leaves a file :class:`TrajectoryReader` opens and reads in full, and
``TrajectoryWriter(path, ..., mode="a")`` resumes it. The reader works while a writer is still
appending (HDF5 single-writer/multiple-reader mode, SWMR).

Time convention: step ``t`` of an episode holds the state ``s_t`` (the map state and, when
stored, the observations the agents saw), the actions ``a_t`` the agents took in it and the
rewards ``r_t`` they received for those actions. The state after the last action is not stored
(the env has already reset by then). With :class:`~ssdinfluence.envs.BatchedEnv`, record
``get_state()`` (or the observations) *before* ``step(actions)`` and the rewards it returns.

File layout (S = steps stored, E = episodes, N = agents, H x W = map; extra fields are the
writer's ``step_fields`` / ``episode_fields``):

==============================  ====================  =========  ========================================
dataset                         shape                 dtype      meaning
==============================  ====================  =========  ========================================
``observations``                [S, N, 15, 15, 3]     uint8      egocentric RGB views (only if ``store_observations``)
``actions``                     [S, N]                int8       actions (int16/int32 if ``num_actions`` > 127)
``rewards``                     [S, N]                float32    rewards received for ``actions``
``terminations``                [S, N]                bool       always False (episodes never terminate)
``truncations``                 [S, N]                bool       True at the last step of each episode
``<step field>``                [S, *shape]           declared   extra per-step data (e.g. ``influence``)
``map/grid``                    [S, H, W]             uint8      tile codes (:mod:`ssdinfluence.envs.tiles`)
``map/positions``               [S, N, 2]             int16      agents' (row, col)
``map/orientations``            [S, N]                int8       agents' orientations (UP, RIGHT, DOWN, LEFT)
``map/beams``                   [S, H, W]             uint8      beams drawn in state s_t (0 none, 1 fire, 2 clean)
``episodes/start``              [E]                   int64      first row of the episode in the step datasets
``episodes/length``             [E]                   int64      its number of steps T (>= 1)
``episodes/env_index``          [E]                   int64      which env of the batch played it
``episodes/env_steps``          [E]                   int64      global env-step counter at the end of the episode
``episodes/update``             [E]                   int64      training update it was played under
``episodes/returns``            [E, N]                float32    per-agent returns
``episodes/<episode field>``    [E, *shape]           declared   extra per-episode data (e.g. social metrics)
==============================  ====================  =========  ========================================

Root attributes: ``format`` = ``"ssdinfluence-trajectories"``, ``format_version`` = 1,
``env_name``, ``num_agents``, ``num_actions``, ``map_text``, ``palette`` ([K, 3] uint8, the
env's colour of every view code), ``config`` (JSON), ``versions`` (JSON: ssdinfluence,
numpy, h5py, hdf5, python, and torch if the writing process had imported it),
``store_observations``, ``step_fields`` and ``episode_fields`` (JSON: name -> [shape, dtype]).

Every step and episode dataset is resizable along axis 0, chunked along time (chunks of about
64 KiB raw, 16 to 1024 steps: 16 steps of observations for 5 agents, 64-128 of map layers,
1024 of small fields) and compressed with gzip level 1, with byte shuffling for multi-byte
types. Measured per 1000-step Cleanup episode, 5 agents, random play (2-core machine):

==========  ==========================  ============================  ===========================
filter      append, map state only      append, with observations     read one episode (without/with)
==========  ==========================  ============================  ===========================
gzip 1      4.0 ms, 53 kB               16 ms, 380 kB                 1.4 / 8.7 ms
lzf         4.0 ms, 111 kB              14 ms, 737 kB                 2.0 / 10.7 ms
gzip 4      6.0 ms, 37 kB               25 ms, 280 kB                 1.7 / 8.2 ms
==========  ==========================  ============================  ===========================

gzip 1 writes as fast as lzf into files half the size, reads faster, and every HDF5 tool
reads it (lzf needs h5py); gzip 4 saves another 30% of space for 1.5 times the write time,
which is spent inside the training loop.

Crash safety: the file is written with ``libver="latest"`` in SWMR mode. An episode is
appended by writing its step rows, then its index rows except ``episodes/length``, flushing,
then writing ``episodes/length`` and flushing again: an episode exists only once its length is
on disk, and the reader trusts only the index (it ignores step rows past the last indexed
episode and a half-written last index row). ``mode="a"`` drops such leftovers; a file whose
writer was killed is still marked "open for writing" by HDF5, so resuming it first copies its
complete episodes into a fresh file that replaces it. A kill at any other write is as
harmless: a new file (or that copy) is built under a temporary name beside it,
``.<name>.create-<pid>.tmp`` (``.recover-``), and renamed over it once complete, so no file
is ever half-created; and a resume opens the file in SWMR mode in one step (opening it for
writing, then switching to SWMR, would leave it marked "open for writing" without SWMR in
between, which HDF5 then refuses in every mode). Outside this module, open a file whose writer
is running or was killed with ``h5py.File(path, "r", swmr=True)``; a closed one opens plainly.

Errors: a missing, unreadable, non-HDF5 or foreign file, or a resume whose settings do not
match the file, raise :class:`TrajectoryFileError` (a ``ValueError``) naming the path and the
reason; malformed episodes raise ``ValueError`` naming the field and leave the file unchanged.
This module imports h5py but never torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from .envs import tiles
from .envs.base import MAP_FIELDS
from .rundir import DiskFullError, _fsync_directory, is_disk_full
from .runtime import sigint_deferred

try:  # POSIX only; elsewhere the "another process is writing" check is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["FORMAT", "FORMAT_VERSION", "TrajectoryFileError", "TrajectoryReader", "TrajectoryWriter"]

FORMAT = "ssdinfluence-trajectories"
FORMAT_VERSION = 1

_COMPRESSION = "gzip"
_COMPRESSION_LEVEL = 1  # see the module docstring's measurements
_CHUNK_BYTES = 64 * 1024
_MIN_CHUNK_ROWS, _MAX_CHUNK_ROWS = 16, 1024
_SPACE_MARGIN = 1 << 20  # free bytes kept for HDF5's metadata (flushes, the final close)

# Step datasets: key in the ``steps`` dict / in TrajectoryReader.episode() -> path in the file.
_BASE_STEP_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations") + MAP_FIELDS
_GENERATED_STEP_FIELDS = ("terminations", "truncations")  # written by the writer, not passed in
_BASE_EPISODE_FIELDS = ("start", "length", "env_index", "env_steps", "update", "returns")
_RESERVED_STEP_NAMES = set(_BASE_STEP_FIELDS) | {"map", "episodes"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What h5py raises on damaged or inaccessible files (translated into TrajectoryFileError).
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


class TrajectoryFileError(ValueError):
    """A trajectory file that cannot be used: missing, unreadable, not ours, or not matching.

    Attributes: ``path`` (str) and ``reason`` (str); ``str(error)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _step_path(name: str) -> str:
    return f"map/{name}" if name in MAP_FIELDS else name


def _action_dtype(num_actions: int) -> np.dtype:
    for dtype in (np.int8, np.int16, np.int32):
        if num_actions - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _chunk_rows(row_shape: tuple, dtype: np.dtype) -> int:
    """Rows per chunk: the power of two nearest below 64 KiB of raw data, within [16, 1024]."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    rows = 1 << max(0, (_CHUNK_BYTES // row_bytes).bit_length() - 1)
    return int(min(_MAX_CHUNK_ROWS, max(_MIN_CHUNK_ROWS, rows)))


def _parse_fields(kind: str, fields, reserved: set) -> dict:
    """Normalise ``{name: (shape, dtype)}`` to ``{name: (tuple shape, np.dtype)}``."""
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise ValueError(f"{kind} must be a dict name -> (shape, dtype), got {type(fields).__name__}")
    out = {}
    for name, spec in fields.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{kind} name {name!r} is not a valid identifier")
        if name in reserved:
            raise ValueError(f"{kind} name {name!r} is reserved (taken by a built-in field)")
        try:
            shape, dtype = spec
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{kind}[{name!r}] must be (shape tuple, dtype), got {spec!r}") from error
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{kind}[{name!r}] has an invalid shape {shape!r} (non-negative ints)")
        if dtype.kind not in "biuf":
            raise ValueError(f"{kind}[{name!r}] has dtype {dtype}; use a bool, integer or float dtype")
        out[name] = (tuple(int(d) for d in shape), dtype)
    return out


def _fields_to_json(fields: dict) -> str:
    return json.dumps({k: [list(shape), dtype.str] for k, (shape, dtype) in fields.items()})


def _fields_from_json(text: str) -> dict:
    return {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in json.loads(text).items()}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _versions() -> dict:
    from . import __version__

    versions = {
        "ssdinfluence": __version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")  # never imported here: recorded only if the caller uses it
    if torch is not None:
        versions["torch"] = str(getattr(torch, "__version__", "unknown"))
    return versions


def _coerce(where: str, name: str, value, shape: tuple, dtype: np.dtype, hint: str = "") -> np.ndarray:
    """``value`` as an array of ``dtype`` and ``shape``, or ``ValueError`` naming the field."""
    label = f"{where}[{name!r}]"
    try:
        array = np.asarray(value)
    except Exception as error:  # any conversion failure is the caller's bad input
        raise ValueError(f"{label} is not an array: {error}") from error
    if array.shape != shape:
        raise ValueError(f"{label} has shape {array.shape}, expected {shape}{hint}")
    kind = array.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise ValueError(f"{label} has dtype {array.dtype}, expected bool")
    elif dtype.kind in "iu":
        if kind not in "iu":
            raise ValueError(f"{label} has dtype {array.dtype}, expected integers (stored as {dtype})")
        if array.size and not np.can_cast(array.dtype, dtype):
            info = np.iinfo(dtype)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise ValueError(f"{label} has values in [{low}, {high}], outside the range of {dtype}")
    elif kind not in "iuf":
        raise ValueError(f"{label} has dtype {array.dtype}, expected numbers (stored as {dtype})")
    return array.astype(dtype, copy=False)


def _check_range(where: str, name: str, array: np.ndarray, low: int, high: int, what: str) -> None:
    if array.size and (array.min() < low or array.max() > high):
        bad = array.min() if array.min() < low else array.max()
        raise ValueError(f"{where}[{name!r}] has value {bad}, expected {what} in {low}..{high}")


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5's signature at offset 0, 512, 1024, 2048, ... (after a user block, if any)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            if handle.read(8) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def _superblock(path: Path) -> tuple[bool, int | None]:
    """``(open_flags_set, stored_eof)`` from a version >= 2 HDF5 superblock at offset 0.

    A writer in SWMR mode (alive, or killed) leaves the "open for writing" flags set; HDF5
    then refuses plain read-only opens. ``stored_eof`` is the end-of-file address the
    superblock records (None for older superblocks, which our files never use).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12 + 4 * 8)
    except OSError:
        return False, None
    if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] < 2:
        return False, None
    size = head[9]  # size of offsets, 8 in practice
    if size not in (2, 4, 8) or len(head) < 12 + 3 * size:
        return head[8] >= 3 and head[11] != 0, None
    base, eof = (int.from_bytes(head[12 + i * size:12 + (i + 1) * size], "little") for i in (0, 2))
    return head[8] >= 3 and head[11] != 0, base + eof


def _try_lock(path: Path, exclusive: bool):
    """An fd holding a non-blocking ``flock`` on ``path``; None if taken elsewhere.

    Returns the string ``"unsupported"`` where locks are unavailable (no fcntl, or a file
    system without flock), so callers skip the check rather than fail.
    """
    if fcntl is None:
        return "unsupported"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "unsupported"
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        return "unsupported"
    return fd


# ====================================================================== reading
class TrajectoryReader:
    """Read a ``trajectories.h5`` file (see the module docstring for the layout).

    Opens the file read-only: in SWMR mode if a writer has it open or was killed (so it works
    while a writer is appending; call :meth:`refresh` to see episodes appended since opening),
    plainly otherwise. Only complete, indexed episodes are visible.

    Raises :class:`TrajectoryFileError` if the path is missing, is not an HDF5 file, cannot be
    read, or is not a trajectory file of a supported format version.

    Attributes: ``path``, ``env_name`` (str), ``num_agents`` (N), ``num_actions``, ``map_text``,
    ``map_shape`` ((H, W)), ``palette`` ([K, 3] uint8), ``config`` (dict), ``versions`` (dict),
    ``store_observations`` (bool), ``step_fields`` / ``episode_fields`` (name -> (shape, dtype)
    of the extra fields), ``format_version``, ``num_episodes`` (E), ``num_steps`` (rows in
    the indexed episodes).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._file = _open_for_reading(self.path)
        try:
            with self._translate("reading the file's header"):
                self._read_header()
                self.refresh()
        except BaseException:
            self._file.close()
            raise

    # ------------------------------------------------------------------ metadata
    def _read_header(self) -> None:
        f, attrs = self._file, self._file.attrs
        try:
            self.env_name = str(attrs["env_name"])
            self.num_agents = int(attrs["num_agents"])
            self.num_actions = int(attrs["num_actions"])
            self.map_text = str(attrs["map_text"])
            self.palette = np.asarray(attrs["palette"], np.uint8)
            self.config = json.loads(attrs["config"])
            self.versions = json.loads(attrs["versions"])
            self.store_observations = bool(attrs["store_observations"])
            self.step_fields = _fields_from_json(attrs["step_fields"])
            self.episode_fields = _fields_from_json(attrs["episode_fields"])
        except (KeyError, ValueError, TypeError) as error:
            raise TrajectoryFileError(self.path, f"damaged header attributes ({error})") from error
        self.format_version = int(attrs["format_version"])
        rows = self.map_text.split("\n")
        self.map_shape = (len(rows), len(rows[0]))
        names = [n for n in _BASE_STEP_FIELDS if n != "observations" or self.store_observations]
        self._step_names = names + list(self.step_fields)
        self._episode_names = list(_BASE_EPISODE_FIELDS) + list(self.episode_fields)
        missing = [_step_path(n) for n in self._step_names if _step_path(n) not in f]
        missing += [f"episodes/{n}" for n in self._episode_names if f"episodes/{n}" not in f]
        if missing:
            raise TrajectoryFileError(self.path, f"missing dataset(s) {missing}")
        self._steps = {n: f[_step_path(n)] for n in self._step_names}
        self._episodes = {n: f[f"episodes/{n}"] for n in self._episode_names}

    def refresh(self) -> int:
        """Re-read the episode index (picks up episodes a live writer appended); returns E."""
        with self._translate("reading the episode index"):
            if self._file.swmr_mode:
                for dataset in (*self._steps.values(), *self._episodes.values()):
                    dataset.refresh()
            count = min(d.shape[0] for d in self._episodes.values())
            step_rows = min(d.shape[0] for d in self._steps.values())
            index = {n: d[:count] for n, d in self._episodes.items()}
        count = _consistent_count(self.path, index["start"], index["length"], step_rows)
        self._index = {n: v[:count] for n, v in index.items()}
        return count

    @property
    def num_episodes(self) -> int:
        """Number of complete, indexed episodes E."""
        return len(self._index["start"])

    @property
    def num_steps(self) -> int:
        """Number of step rows belonging to indexed episodes."""
        return int(self._index["length"].sum())

    def __len__(self) -> int:
        return self.num_episodes

    # ------------------------------------------------------------------ data
    def episodes(self) -> dict:
        """The episode index: a dict of arrays with E rows (copies).

        ``start`` [E] int64, ``length`` [E] int64, ``env_index`` [E] int64, ``env_steps`` [E]
        int64, ``update`` [E] int64, ``returns`` [E, N] float32, and every episode field
        [E, *shape].
        """
        return {n: v.copy() for n, v in self._index.items()}

    def _episode_range(self, k) -> tuple[int, int]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"episode index must be an integer, got {type(k).__name__}")
        count = self.num_episodes
        if not -count <= k < count:
            raise IndexError(f"episode {k} out of range: {self.path} holds {count} episode(s)")
        k = int(k) % count
        return int(self._index["start"][k]), int(self._index["length"][k])

    def episode(self, k: int) -> dict:
        """All step data of episode ``k`` (negative counts from the end), T = its length.

        Keys: ``actions`` [T, N] (int8 unless > 127 actions), ``rewards`` [T, N] float32,
        ``terminations``, ``truncations`` [T, N] bool, ``grid`` [T, H, W] uint8, ``positions``
        [T, N, 2] int16, ``orientations`` [T, N] int8, ``beams`` [T, H, W] uint8,
        ``observations`` [T, N, 15, 15, 3] uint8 (if stored) and every step field [T, *shape].
        Raises ``IndexError`` if ``k`` is out of range.
        """
        start, length = self._episode_range(k)
        with self._translate(f"reading episode {k}"):
            return {n: d[start:start + length] for n, d in self._steps.items()}

    def frames(self, k: int, start: int = 0, stop: int | None = None, scale: int = 8) -> np.ndarray:
        """RGB frames of steps ``start:stop`` of episode ``k``, ``[T', H*scale, W*scale, 3] uint8``.

        Re-rendered from the stored map state exactly as ``env.render(index, scale)`` drew
        state s_t (beams, agents in their colours with a darker mark on the side they face).
        ``start`` and ``stop`` follow Python slice rules within the episode.
        """
        from .envs.base import map_codes, render_frame

        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        first, length = self._episode_range(k)
        lo, hi, _ = slice(start, stop).indices(length)
        hi = max(lo, hi)
        rows = slice(first + lo, first + hi)
        with self._translate(f"reading episode {k}"):
            grid = self._steps["grid"][rows]
            beams = self._steps["beams"][rows]
            positions = self._steps["positions"][rows].astype(np.int64)
            orientations = self._steps["orientations"][rows]
        codes = map_codes(grid, positions, beams)
        H, W = self.map_shape
        out = np.empty((len(codes), H * scale, W * scale, 3), np.uint8)
        for t in range(len(codes)):
            out[t] = render_frame(codes[t], positions[t], orientations[t], self.palette, int(scale))
        return out

    # ------------------------------------------------------------------ lifetime
    def _translate(self, what: str):
        return _translate_h5(self.path, what)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"TrajectoryReader({str(self.path)!r}, env={self.env_name!r}, agents={self.num_agents}, "
                f"episodes={self.num_episodes}, steps={self.num_steps})")


def _open_for_reading(path: Path) -> h5py.File:
    """The file opened read-only after checking it is ours; TrajectoryFileError if not."""
    if not path.exists():
        raise TrajectoryFileError(path, "no such file")
    if path.is_dir():
        raise TrajectoryFileError(path, "is a directory, not a trajectory file")
    try:
        is_hdf5 = _has_hdf5_signature(path)
    except OSError as error:
        raise TrajectoryFileError(path, f"cannot read the file ({error.strerror or error})") from error
    if not is_hdf5:
        empty = path.stat().st_size == 0
        raise TrajectoryFileError(path, "not an HDF5 file" + (" (empty file)" if empty else ""))
    # Files written to by a SWMR writer (alive, or killed) must be read in SWMR mode; all
    # others are opened plainly, where HDF5 detects damage at once (a SWMR reader retries a
    # damaged read for minutes, taking it for a write in progress).
    open_flags, stored_eof = _superblock(path)
    if open_flags:
        probe = _try_lock(path, exclusive=False)
        if probe is None:
            raise TrajectoryFileError(path, "the file is locked: a writer is still creating it (try again)")
        if isinstance(probe, int):
            os.close(probe)
        size = path.stat().st_size
        if stored_eof is not None and stored_eof > size:
            raise TrajectoryFileError(path, f"truncated file ({size} bytes, its superblock says {stored_eof})")
    try:
        try:
            f = h5py.File(path, "r", swmr=open_flags)
        except OSError as error:
            if open_flags or "already open for write" not in str(error):
                raise
            f = h5py.File(path, "r", swmr=True)  # a writer started in between
    except OSError as error:
        raise TrajectoryFileError(path, f"cannot open the HDF5 file: {_explain(error)}") from error
    try:
        with _translate_h5(path, "reading the root attributes"):
            fmt = f.attrs.get("format")
            version = f.attrs.get("format_version")
        fmt, version = (v.item() if isinstance(v, np.generic) else v for v in (fmt, version))
        if fmt != FORMAT:
            raise TrajectoryFileError(
                path, f"not an ssdinfluence trajectory file (root attribute 'format' is {fmt!r}, expected {FORMAT!r})")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise TrajectoryFileError(
                path, f"unsupported format_version {version!r} (this ssdinfluence reads 1..{FORMAT_VERSION})")
    except BaseException:
        f.close()
        raise
    return f


def _consistent_count(path, start: np.ndarray, length: np.ndarray, step_rows: int) -> int:
    """How many leading index rows describe complete episodes.

    Only the last row can be half-written (a writer killed while committing it): it is dropped
    if its length is not on disk or its steps are missing. Any other inconsistency means the
    file is damaged.
    """
    count = len(start)
    expected = np.concatenate([[0], np.cumsum(length)[:-1]]) if count else np.zeros(0, np.int64)
    ok = (length >= 1) & (start == expected) & (start + length <= step_rows)
    while count and not ok[count - 1]:
        count -= 1
    if not ok[:count].all():
        bad = int(np.flatnonzero(~ok[:count])[0])
        raise TrajectoryFileError(path, f"damaged episode index at episode {bad} (start {start[bad]}, length "
                                        f"{length[bad]}, {step_rows} step rows)")
    return count


# ====================================================================== writing
class TrajectoryWriter:
    """Append whole episodes to a ``trajectories.h5`` file (layout in the module docstring).

    Args:
        path: file to write.
        env_name: ``"cleanup"`` or ``"harvest"`` (any non-empty name is accepted).
        num_agents: N. num_actions: A (actions are stored as int8 if A <= 127).
        map_text: the ASCII map (``env.layout.text``); fixes H x W.
        palette: ``[K, 3] uint8`` colour of every view code (``env.palette``, K >= 8 + N).
        config: JSON-able dict stored as the ``config`` attribute (numpy values and paths are
            converted, anything else is stored as its repr).
        store_observations: also store the observations (``[T, N, 15, 15, 3] uint8`` a step).
        step_fields: extra per-step datasets, ``{name: (shape per step, dtype)}``, e.g.
            ``{"influence": ((N,), np.float32), "messages": ((N,), np.int16)}``.
        episode_fields: extra per-episode datasets, ``{name: (shape, dtype)}``, e.g.
            ``{"efficiency": ((), np.float32)}``.
        mode: ``"w"`` creates (or overwrites) the file; ``"a"`` appends to an existing file
            (creating it if missing) after checking that env name, agents, actions, map,
            palette, ``store_observations`` and the extra fields all match, else
            :class:`TrajectoryFileError`. The file keeps its original ``config`` and
            ``versions``; rows of an episode that was never committed are dropped.

    Raises ``ValueError`` for bad arguments and :class:`TrajectoryFileError` when the file
    cannot be created or resumed (e.g. another process is writing it).

    Methods: :meth:`append_episode`, :meth:`truncate_after_update`, :meth:`flush`,
    :meth:`close`; properties ``num_episodes`` (E) and ``num_steps`` (S). Use it as a context
    manager (or call :meth:`close`); every :meth:`append_episode` is flushed, so nothing more
    is needed for the file to survive a crash.
    """

    def __init__(self, path, *, env_name: str, num_agents: int, num_actions: int, map_text: str,
                 palette: np.ndarray, config: dict | None = None, store_observations: bool = False,
                 step_fields: dict | None = None, episode_fields: dict | None = None, mode: str = "w"):
        from .envs.maps import parse_map

        self.path = Path(path)
        self._file = None
        self._lock_fd = None
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (create) or 'a' (append/resume), got {mode!r}")
        if not isinstance(env_name, str) or not env_name:
            raise ValueError(f"env_name must be a non-empty string, got {env_name!r}")
        for name, value in (("num_agents", num_agents), ("num_actions", num_actions)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        num_agents, num_actions = int(num_agents), int(num_actions)
        layout = parse_map(map_text)
        palette = np.asarray(palette)
        if (palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] < tiles.AGENT_BASE + num_agents
                or palette.dtype.kind not in "iu" or (palette.size and (palette.min() < 0 or palette.max() > 255))):
            raise ValueError(f"palette must be [K >= {tiles.AGENT_BASE + num_agents}, 3] integers in 0..255 "
                             f"(env.palette), got shape {palette.shape} dtype {palette.dtype}")
        if config is not None and not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict or None, got {type(config).__name__}")
        self.env_name, self.num_agents, self.num_actions = env_name, num_agents, num_actions
        self.map_text = layout.text
        self.map_shape = layout.shape
        self.palette = palette.astype(np.uint8)
        self.store_observations = bool(store_observations)
        self.step_fields = _parse_fields("step_fields", step_fields, _RESERVED_STEP_NAMES)
        self.episode_fields = _parse_fields("episode_fields", episode_fields, set(_BASE_EPISODE_FIELDS))
        self._config_json = json.dumps({} if config is None else dict(config), default=_json_default,
                                       sort_keys=True)

        N, (H, W) = num_agents, layout.shape
        base_steps = {
            "observations": ((N, tiles.VIEW_SIZE, tiles.VIEW_SIZE, 3), np.dtype(np.uint8)),
            "actions": ((N,), _action_dtype(num_actions)),
            "rewards": ((N,), np.dtype(np.float32)),
            "terminations": ((N,), np.dtype(np.bool_)),
            "truncations": ((N,), np.dtype(np.bool_)),
            "grid": ((H, W), np.dtype(np.uint8)),
            "positions": ((N, 2), np.dtype(np.int16)),
            "orientations": ((N,), np.dtype(np.int8)),
            "beams": ((H, W), np.dtype(np.uint8)),
        }
        if not self.store_observations:
            del base_steps["observations"]
        self._step_specs = {**base_steps, **self.step_fields}  # name -> (per-step shape, dtype)
        self._episode_specs = {
            "start": ((), np.dtype(np.int64)),
            "length": ((), np.dtype(np.int64)),
            "env_index": ((), np.dtype(np.int64)),
            "env_steps": ((), np.dtype(np.int64)),
            "update": ((), np.dtype(np.int64)),
            "returns": ((N,), np.dtype(np.float32)),
            **self.episode_fields,
        }

        if mode == "a" and self.path.exists():
            self._resume()
        else:
            self._create()

    # ------------------------------------------------------------------ opening
    def _header_attrs(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "env_name": self.env_name,
            "num_agents": self.num_agents,
            "num_actions": self.num_actions,
            "map_text": self.map_text,
            "palette": self.palette,
            "config": self._config_json,
            "versions": json.dumps(_versions(), sort_keys=True),
            "store_observations": self.store_observations,
            "step_fields": _fields_to_json(self.step_fields),
            "episode_fields": _fields_to_json(self.episode_fields),
        }

    def _create(self) -> None:
        # A live writer would go on appending to the replaced file, unseen: refuse while
        # another process (a live writer, a reader) has it open.
        if self.path.exists():
            self._refuse_if_open("overwrite")
        # Built under a temporary name and renamed once complete and in SWMR mode: a kill
        # before the rename leaves the old file (or none), never a half-created one.
        tmp = _temp_path(self.path, "create")
        try:
            f = h5py.File(tmp, "w", libver="latest")
        except OSError as error:
            raise _cannot(self.path, "create the file", error) from error
        lock = None
        try:
            with _translate_h5(self.path, "writing the file's header"):
                for key, value in self._header_attrs().items():
                    f.attrs[key] = value
                for name, (shape, dtype) in self._step_specs.items():
                    _create_dataset(f, _step_path(name), shape, dtype)
                for name, (shape, dtype) in self._episode_specs.items():
                    _create_dataset(f, f"episodes/{name}", shape, dtype)
            with _translate_h5(self.path, "starting SWMR writing"):
                f.flush()
                f.swmr_mode = True  # from here on readers may open the file; HDF5 drops its lock
            lock = _try_lock(tmp, exclusive=False)  # before the rename: the file is never unlocked
            try:
                _replace(tmp, self.path)
            except OSError as error:
                raise _cannot(self.path, "create the file", error) from error
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            if isinstance(lock, int):
                os.close(lock)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._attach(f, num_episodes=0, num_steps=0, lock=lock)

    def _refuse_if_open(self, action: str) -> None:
        """TrajectoryFileError if another process (a live writer, a reader) has the file open."""
        probe = _try_lock(self.path, exclusive=True)
        if probe is None:
            raise TrajectoryFileError(self.path, f"cannot {action}: the file is open in another process "
                                                 "(a writer still running, or a reader)")
        if probe != "unsupported":
            os.close(probe)

    def _resume(self) -> None:
        # 1. Read-only look: is it ours, does it match, what is committed? (works after a crash)
        with TrajectoryReader(self.path) as reader:
            problems = self._mismatches(reader)
            if problems:
                raise TrajectoryFileError(self.path, "cannot append: the file does not match this writer: "
                                                     + "; ".join(problems))
            num_episodes, num_steps = reader.num_episodes, reader.num_steps
        # 2. Nobody else may hold it (a live writer keeps a shared lock; so does a reader).
        self._refuse_if_open("append")
        # 3. A writer killed in SWMR mode leaves HDF5's "open for writing" flags set, and HDF5
        #    refuses to open such a file for writing: copy its complete episodes to a new file.
        if _superblock(self.path)[0]:
            _recover(self.path)
        # 4. Open it in SWMR mode at once: a kill from here on leaves the case of step 3.
        try:
            f = _open_swmr_writer(self.path)
        except OSError as error:
            raise _cannot(self.path, "open the file for appending", error) from error
        try:
            with _translate_h5(self.path, "dropping an uncommitted episode"):
                for name in self._step_specs:
                    f[_step_path(name)].resize(num_steps, axis=0)
                for name in self._episode_specs:
                    f[f"episodes/{name}"].resize(num_episodes, axis=0)
                f.flush()
        except BaseException:
            f.close()
            raise
        self._attach(f, num_episodes=num_episodes, num_steps=num_steps,
                     lock=_try_lock(self.path, exclusive=False))

    def _mismatches(self, reader: TrajectoryReader) -> list[str]:
        problems = []
        for attr in ("env_name", "num_agents", "num_actions", "map_text", "store_observations"):
            theirs, ours = getattr(reader, attr), getattr(self, attr)
            if attr == "map_text" and theirs != ours:
                (h1, w1), (h2, w2) = reader.map_shape, self.map_shape
                problems.append(f"map_text differs (a {h1}x{w1} map in the file, {h2}x{w2} here)")
            elif theirs != ours:
                problems.append(f"{attr} is {theirs!r} in the file, {ours!r} here")
        if not np.array_equal(reader.palette, self.palette):
            problems.append("palette differs")
        for kind in ("step_fields", "episode_fields"):
            theirs, ours = getattr(reader, kind), getattr(self, kind)
            if theirs != ours:
                problems.append(f"{kind} are {_describe_fields(theirs)} in the file, {_describe_fields(ours)} here")
        return problems

    def _attach(self, f: h5py.File, num_episodes: int, num_steps: int, lock) -> None:
        """Write to ``f`` (open in SWMR mode), holding ``lock`` (a shared lock on the file
        from :func:`_try_lock`, which tells a would-be resumer we are alive)."""
        self._file = f
        self._steps = {name: f[_step_path(name)] for name in self._step_specs}
        self._episodes = {name: f[f"episodes/{name}"] for name in self._episode_specs}
        self._num_episodes, self._num_steps = num_episodes, num_steps
        self._lock_fd = lock if isinstance(lock, int) else None

    # ------------------------------------------------------------------ appending
    @property
    def num_episodes(self) -> int:
        """Number of episodes in the file (E)."""
        return self._num_episodes

    @property
    def num_steps(self) -> int:
        """Number of step rows in the file (S)."""
        return self._num_steps

    def append_episode(self, steps: Mapping, episode: Mapping) -> int:
        """Append one whole episode and flush it; returns its index k.

        Args:
            steps: per-step arrays of the episode, T >= 1 steps, index t = state s_t, action
                a_t, reward r_t: ``actions`` [T, N] integers in [0, A), ``rewards`` [T, N]
                numbers, ``grid`` [T, H, W] tile codes 0..5, ``positions`` [T, N, 2] (row, col)
                on the map, ``orientations`` [T, N] 0..3, ``beams`` [T, H, W] 0..2,
                ``observations`` [T, N, 15, 15, 3] uint8 (required if ``store_observations``,
                ignored otherwise), and every declared step field [T, *shape].
            episode: ``env_index``, ``env_steps`` (global env-step counter at the episode's
                end), ``update`` (non-negative ints), ``returns`` [N] numbers, and every
                declared episode field [*shape].

        Raises ``ValueError`` naming the field if anything is missing, unexpected, of the
        wrong shape, dtype or range; the file is then unchanged.
        """
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        step_data = self._check_steps(steps)
        episode_data = self._check_episode(episode)
        T = len(step_data["actions"])
        S, E = self._num_steps, self._num_episodes
        step_data["terminations"] = np.zeros((T, self.num_agents), np.bool_)
        step_data["truncations"] = np.zeros((T, self.num_agents), np.bool_)
        step_data["truncations"][-1] = True
        episode_data["start"] = np.int64(S)
        episode_data["length"] = np.int64(T)
        self._check_space(sum(a.nbytes for a in step_data.values()))
        try:
            with sigint_deferred(), _translate_h5(self.path, "appending an episode"):
                for name, dataset in self._steps.items():
                    dataset.resize(S + T, axis=0)
                    dataset[S:S + T] = step_data[name]
                for name, dataset in self._episodes.items():
                    if name != "length":
                        dataset.resize(E + 1, axis=0)
                        dataset[E] = episode_data[name]
                self._file.flush()
                # Commit: the episode exists once its length is on disk.
                self._episodes["length"].resize(E + 1, axis=0)
                self._episodes["length"][E] = T
                self._file.flush()
        except Exception:  # undo, so the file stays as it was (a Ctrl-C waits for the commit)
            with contextlib.suppress(Exception):
                for dataset in self._steps.values():
                    dataset.resize(S, axis=0)
                for dataset in self._episodes.values():
                    dataset.resize(E, axis=0)
                self._file.flush()
            raise
        self._num_steps, self._num_episodes = S + T, E + 1
        return E

    def _check_space(self, nbytes: int) -> None:
        """``DiskFullError`` unless the disk has room for ``nbytes`` more and HDF5's metadata.

        HDF5 cannot recover from a write that fails for want of space: the file's handles can
        then neither flush nor close (and may crash the process), so stop before one does.
        """
        import shutil

        if shutil.disk_usage(self.path.parent).free < nbytes + _SPACE_MARGIN:
            raise DiskFullError(self.path)

    def truncate_after_update(self, update: int) -> int:
        """Drop the episodes logged under a later update than ``update``; returns E left.

        For resuming training from a checkpoint taken after ``update`` updates: episodes the
        interrupted run logged after it would otherwise appear twice. Episodes are dropped from
        the first one whose ``update`` exceeds ``update`` to the end (appending order). The
        index shrinks before the step rows, so a crash in between leaves a consistent file.
        """
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if isinstance(update, bool) or not isinstance(update, (int, np.integer)):
            raise ValueError(f"update must be an integer, got {update!r}")
        E = self._num_episodes
        with _translate_h5(self.path, "truncating episodes"):
            later = np.flatnonzero(self._episodes["update"][:E] > update)
            if not later.size:
                return E
            keep = int(later[0])
            rows = int(self._episodes["start"][keep])
            self._episodes["length"].resize(keep, axis=0)  # un-commit first
            for dataset in self._episodes.values():
                dataset.resize(keep, axis=0)
            self._file.flush()
            for dataset in self._steps.values():
                dataset.resize(rows, axis=0)
            self._file.flush()
        self._num_episodes, self._num_steps = keep, rows
        return keep

    def _check_steps(self, steps: Mapping) -> dict:
        if not isinstance(steps, Mapping):
            raise ValueError(f"steps must be a dict of arrays, got {type(steps).__name__}")
        required = [n for n in self._step_specs if n not in _GENERATED_STEP_FIELDS]
        missing = [n for n in required if n not in steps]
        if missing:
            raise ValueError(f"steps is missing field(s) {missing}")
        ignored = set() if self.store_observations else {"observations"}
        unexpected = sorted(set(steps) - set(required) - ignored, key=str)
        if unexpected:
            raise ValueError(f"steps has unexpected field(s) {unexpected} (declare extra per-step data "
                             f"with step_fields=; terminations/truncations are written by the writer)")
        actions = np.asarray(steps["actions"])
        if actions.ndim < 1 or len(actions) < 1:
            raise ValueError(f"steps['actions'] has shape {actions.shape}; an episode needs T >= 1 steps")
        T = len(actions)
        hint = f" (T={T} steps, from steps['actions'])"
        out = {}
        for name in required:
            shape, dtype = self._step_specs[name]
            out[name] = _coerce("steps", name, steps[name], (T,) + shape, dtype, hint)
        H, W = self.map_shape
        _check_range("steps", "actions", out["actions"], 0, self.num_actions - 1, "actions")
        _check_range("steps", "grid", out["grid"], 0, tiles.STREAM, "tile codes")
        _check_range("steps", "beams", out["beams"], 0, tiles.BEAM_CLEAN, "beam codes")
        _check_range("steps", "orientations", out["orientations"], 0, 3, "orientations")
        _check_range("steps", "positions", out["positions"][..., 0], 0, H - 1, "rows")
        _check_range("steps", "positions", out["positions"][..., 1], 0, W - 1, "columns")
        return out

    def _check_episode(self, episode: Mapping) -> dict:
        if not isinstance(episode, Mapping):
            raise ValueError(f"episode must be a dict, got {type(episode).__name__}")
        required = [n for n in self._episode_specs if n not in ("start", "length")]
        missing = [n for n in required if n not in episode]
        if missing:
            raise ValueError(f"episode is missing field(s) {missing}")
        unexpected = sorted(set(episode) - set(required), key=str)
        if unexpected:
            raise ValueError(f"episode has unexpected field(s) {unexpected} (declare extra per-episode "
                             f"data with episode_fields=)")
        out = {}
        for name in ("env_index", "env_steps", "update"):
            value = episode[name]
            if isinstance(value, np.ndarray) and value.shape == ():
                value = value[()]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"episode[{name!r}] must be a non-negative integer, got {value!r}")
            out[name] = np.int64(value)
        for name in ["returns", *self.episode_fields]:
            shape, dtype = self._episode_specs[name]
            out[name] = _coerce("episode", name, episode[name], shape, dtype)
        return out

    # ------------------------------------------------------------------ lifetime
    def flush(self) -> None:
        """Flush to disk (``append_episode`` already does; harmless to call again)."""
        if self._file is not None:
            with _translate_h5(self.path, "flushing"):
                self._file.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent); the file is then a clean, ordinary HDF5 file.

        If the final flush fails (a full disk) the writer is closed all the same and the file
        keeps every committed episode; the error is raised as ``DiskFullError`` or
        :class:`TrajectoryFileError`.
        """
        if self._file is not None:
            try:
                with _translate_h5(self.path, "closing the file"):
                    self._file.close()
            finally:
                self._file = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else "open"
        return (f"TrajectoryWriter({str(self.path)!r}, env={self.env_name!r}, agents={self.num_agents}, "
                f"episodes={self._num_episodes if self._file is not None else '?'}, {state})")


def _create_dataset(f: h5py.File, path: str, shape: tuple, dtype: np.dtype) -> None:
    """Empty dataset [0, *shape], resizable along axis 0, chunked along it, gzip-compressed."""
    f.create_dataset(
        path, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
        chunks=(_chunk_rows(shape, dtype),) + shape,
        compression=_COMPRESSION, compression_opts=_COMPRESSION_LEVEL,
        shuffle=dtype.itemsize > 1,
    )


def _recover(path: Path) -> None:
    """Replace a file left by a killed SWMR writer with a clean copy (datasets copied verbatim)."""
    import shutil

    if shutil.disk_usage(path.parent).free < path.stat().st_size:  # fail before HDF5 does, mid-copy
        raise DiskFullError(path.parent)
    tmp = _temp_path(path, "recover")
    try:
        with _translate_h5(path, "recovering the file of a killed writer"):
            with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for name in src:
                    src.copy(src[name], dst, name=name)
        try:
            _replace(tmp, path)
        except OSError as error:
            raise _cannot(path, "replace the file by its recovered copy", error) from error
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _temp_path(path: Path, purpose: str) -> Path:
    """Where ``path`` is built before it replaces ``path`` (``rundir.remove_temp_files``
    deletes those a killed writer left)."""
    return path.with_name(f".{path.name}.{purpose}-{os.getpid()}.tmp")


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` once its data is on disk (fsync), durably."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _open_swmr_writer(path: Path) -> h5py.File:
    """``path`` opened for appending in SWMR mode, in one step.

    HDF5 then marks its superblock "open for writing" and "SWMR writing" in one write.
    ``h5py.File(path, "a")`` followed by ``swmr_mode = True`` writes them apart, and a file
    killed in between is refused by every mode of HDF5 (until ``h5clear``).
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    return h5py.File(fid)


@contextlib.contextmanager
def _translate_h5(path, what: str):
    try:
        yield
    except TrajectoryFileError:
        raise
    except _H5_ERRORS as error:
        if is_disk_full(error):
            raise DiskFullError(path) from error
        raise TrajectoryFileError(path, f"error while {what}: {_explain(error)}") from error


def _cannot(path, action: str, error: OSError) -> OSError | TrajectoryFileError:
    if is_disk_full(error):
        return DiskFullError(path)
    return TrajectoryFileError(path, f"cannot {action}: {_explain(error)}")


# HDF5's words for a file another process holds ("unable to lock file, errno = 11"); a bare
# "lock" would also match "sblock" (superblock) in its report of a truncated file.
_LOCKED_RE = re.compile(r"\block(ed|ing)?\b", re.IGNORECASE)


def _explain(error: BaseException) -> str:
    reason = str(error)
    if "truncated file" in reason:
        return f"truncated file, its end is missing ({reason})"
    if _LOCKED_RE.search(reason):
        return f"the file is open in another process ({reason})"
    return reason


def _describe_fields(fields: dict) -> str:
    if not fields:
        return "none"
    return "{" + ", ".join(f"{k}: {shape} {dtype}" for k, (shape, dtype) in fields.items()) + "}"
