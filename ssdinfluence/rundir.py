"""A run directory's safety: one writer at a time, atomic rewrites, the metrics log, full disks.

A run directory holds ``config.json``, ``metrics.csv`` (one row per update), ``checkpoint.pt``,
optionally ``trajectories.h5``, and ``.lock``, the lock file that keeps a second process out
while one trains in it. Files that are rewritten (the config, the checkpoint, the metrics
cut back to a checkpoint on resume) go through :func:`atomic_write`: a temporary file beside
the target, fsynced, then renamed over it, so a kill leaves the old file or the new one,
never a half-written one. A full disk raises :class:`DiskFullError` naming the file.

Imports neither torch nor h5py.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DiskFullError", "MetricsLog", "RunDirError", "RunFiles", "atomic_write", "exclusive", "in_use", "locked",
           "metrics_until", "pack", "packed_path", "remove_temp_files", "unpack"]

TEMP_SUFFIX = ".tmp"


class RunDirError(ValueError):
    """A run directory that cannot be used now: held by another process, or a damaged file."""


class DiskFullError(OSError):
    """The disk filled up while writing ``path``; ``str()`` is ``"no space left on device: <path>"``."""

    def __init__(self, path):
        self.path = str(path)
        super().__init__(errno.ENOSPC, f"no space left on device: {self.path}")

    def __str__(self) -> str:
        return f"no space left on device: {self.path}"


def is_disk_full(error: BaseException | None) -> bool:
    """True for ENOSPC (and EDQUOT, a full quota), whoever raised it, also where it is the cause
    or context of another error (matplotlib's PDF writer reports a zlib error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):  # HDF5 and torch report it in their messages
            return True
        error = error.__cause__ or error.__context__
    return False


@dataclass
class RunFiles:
    """The paths of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def trajectories(self) -> Path:
        return self.root / "trajectories.h5"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def owns(self, path) -> bool:
        """True if ``path`` names a file the run writes: its config, metrics (gzipped too),
        checkpoint, episode log, lock, or a temporary file in the run directory."""
        path = Path(path).resolve()
        if path.parent != self.root.resolve():
            return False
        names = {p.name for p in (self.config, self.metrics, self.checkpoint, self.trajectories, self.lock)}
        return path.name in names | {"metrics.csv.gz"} or path.name.endswith(TEMP_SUFFIX)


@contextlib.contextmanager
def locked(root):
    """Hold ``root``'s lock file for the block (creating ``root``); :class:`RunDirError` if
    another trainer holds it, in another process or this one."""
    files = RunFiles(Path(root))
    files.root.mkdir(parents=True, exist_ok=True)
    with exclusive(files.lock, f"{files.root}: another process is training in this run directory (it holds "
                               f"{files.lock}); wait for it to end, or choose another --out"):
        yield files


def in_use(root) -> bool:
    """True while a process (this one included) holds run directory ``root``'s lock."""
    lock = RunFiles(Path(root)).lock
    if not lock.exists():  # never trained in: nothing to take (and no lock file to create)
        return False
    try:
        with exclusive(lock, ""):
            return False
    except RunDirError:
        return True


@contextlib.contextmanager
def exclusive(lock_path, busy: str):
    """Hold the OS file lock ``lock_path`` for the block; :class:`RunDirError` ``busy`` if it is
    held, by another process or in this one (not re-entrant).

    The lock goes when its process dies, ``kill -9`` included, so a crashed run never blocks
    its resume.
    """
    from filelock import FileLock, Timeout  # torch depends on filelock

    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirError(busy) from None
    try:
        yield
    finally:
        lock.release()


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Where :func:`atomic_write` stages ``path`` (one writer per run, so one fixed name)."""
    return path.with_name(path.name + TEMP_SUFFIX)


def atomic_write(path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` atomically: temporary file, fsync, ``os.replace``.

    On any failure the temporary file is removed and ``path`` is as it was; a full disk
    raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    tmp = temp_path(path)
    if isinstance(data, str):
        data = data.encode()
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(error):
            raise DiskFullError(path) from error
        if isinstance(error, OSError):  # EIO and the like: name the file, not a traceback
            raise RunDirError(f"{path}: cannot write it ({error.strerror or error})") from error
        raise
    _fsync_directory(path.parent)


def remove_temp_files(files: RunFiles) -> list[Path]:
    """Delete temporary files a killed writer left (they may hold a full disk); returns them."""
    removed = []
    for target in (files.config, files.metrics, files.checkpoint):
        tmp = temp_path(target)
        if tmp.exists():
            tmp.unlink()
            removed.append(tmp)
    for tmp in files.root.glob(f".{files.trajectories.name}.*-*{TEMP_SUFFIX}"):  # .create-<pid>, .recover-<pid>
        tmp.unlink()
        removed.append(tmp)
    return removed


# ---------------------------------------------------------------------------- carrying a run


def packed_path(path: Path) -> Path:
    """The gzip-compressed copy of ``path`` that a repository keeps (``checkpoint.pt.gz``)."""
    return path.with_name(path.name + ".gz")


def pack(root, unfinished: bool) -> list[Path]:
    """Write gzip-compressed copies of a run's files beside them, for a run kept in a repository
    (the ``.gz`` files are committed, the plain ones are not): ``metrics.csv.gz`` always, and
    for an ``unfinished`` run what its resume needs, ``checkpoint.pt.gz`` and, where the run
    logs episodes, ``trajectories.h5.gz``. For a finished run those two copies are deleted: its
    training is over. Call it while no process trains in ``root``. Returns the files written."""
    files = RunFiles(Path(root))
    resume_files = (files.checkpoint, files.trajectories)
    written = []
    for path in (files.metrics, *(resume_files if unfinished else ())):
        if path.exists():
            atomic_write(packed_path(path), gzip.compress(path.read_bytes(), mtime=0))
            written.append(packed_path(path))
    if not unfinished:
        for path in resume_files:
            packed_path(path).unlink(missing_ok=True)
    return written


def unpack(root) -> list[Path]:
    """Restore a packed unfinished run (:func:`pack`) where its plain files are missing, as in a
    fresh clone of the repository that keeps it: ``checkpoint.pt`` from ``checkpoint.pt.gz``,
    with ``metrics.csv`` and ``trajectories.h5`` where they too are missing. Returns the files
    restored (none when there is no packed checkpoint or the plain one exists)."""
    files = RunFiles(Path(root))
    if files.checkpoint.exists() or not packed_path(files.checkpoint).exists():
        return []
    restored = []
    for path in (files.metrics, files.trajectories, files.checkpoint):  # the checkpoint last: it marks a whole set
        if not path.exists() and packed_path(path).exists():
            try:
                data = gzip.decompress(packed_path(path).read_bytes())
            except (OSError, EOFError) as error:
                raise RunDirError(f"{packed_path(path)}: damaged ({error})") from error
            atomic_write(path, data)
            restored.append(path)
    return restored


# ---------------------------------------------------------------------------- metrics.csv


def saved_metrics(root: str | Path) -> Path:
    """The metrics file of run directory ``root`` as stored: ``metrics.csv``, or for a finished
    run kept in the repository ``metrics.csv.gz`` (the study's 45-column files are 2.3 MB as
    text); ``metrics.csv`` when there is neither (a run that has not written one)."""
    plain = Path(root) / "metrics.csv"
    packed = plain.with_name("metrics.csv.gz")
    return packed if packed.exists() and not plain.exists() else plain


def open_metrics(path: Path, mode: str = "r"):
    """Open a metrics file as :func:`saved_metrics` names it (gzip-compressed if it ends in .gz);
    ``mode`` "r" (text, CSV newlines) or "rb"."""
    if path.suffix == ".gz":
        return gzip.open(path, mode + ("t" if mode == "r" else ""), newline="" if mode == "r" else None)
    return open(path, mode, newline="" if mode == "r" else None)


class MetricsLog:
    """``metrics.csv`` opened for appending rows (one per update), each on disk once written.

    Rows go out in a single unbuffered write each, so a failed write (a full disk) leaves
    nothing pending that a later close would try again; a torn last row is dropped on resume.
    """

    def __init__(self, path, columns: list[str], append: bool):
        self.path = Path(path)
        self.columns = list(columns)
        exists = append and self.path.exists() and self.path.stat().st_size > 0
        self._handle = open(self.path, "ab" if exists else "wb", buffering=0)
        if not exists:
            self._write(self._format(self.columns))

    def _format(self, values) -> bytes:
        text = io.StringIO()
        csv.writer(text).writerow(values)
        return text.getvalue().encode()

    def _write(self, data: bytes) -> None:
        try:
            written = self._handle.write(data)
            if written != len(data):  # a short write is how a full disk often shows first
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:
            if is_disk_full(error):
                raise DiskFullError(self.path) from error
            raise

    def write(self, row: dict) -> None:
        """Append ``row`` (column -> value; missing columns stay empty)."""
        unknown = sorted(set(row) - set(self.columns))
        if unknown:
            raise ValueError(f"{self.path}: row has columns {unknown} the header lacks")
        self._write(self._format([row.get(name, "") for name in self.columns]))

    def close(self) -> None:
        self._handle.close()


def metrics_until(path, columns: list[str], update: int) -> bytes:
    """The bytes of ``metrics.csv`` cut back to its header and rows 1..``update``.

    For resuming from a checkpoint taken after ``update`` updates: rows a killed run wrote
    later (complete, torn or garbled) are dropped. Raises :class:`RunDirError` naming the
    file and the line if the file is missing, its header is not ``columns``, or a row the
    checkpoint needs is missing or damaged.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing (the checkpoint is at update {update}, whose metrics rows "
                          f"are gone)") from None
    except OSError as error:
        raise RunDirError(f"{path}: cannot read it ({error.strerror or error})") from error
    lines = data.splitlines(keepends=True)
    header = _parse_line(lines[0]) if lines else None
    if header != list(columns):
        what = "empty" if not data else "its header is not the columns this run writes"
        raise RunDirError(f"{path}: {what}; it does not belong to this run's checkpoint")
    if len(lines) - 1 < update:
        raise RunDirError(f"{path}: holds {len(lines) - 1} rows but the checkpoint is at update {update} "
                          f"(rows 1..{update} are needed)")
    for number in range(1, update + 1):
        row = _parse_line(lines[number])
        if row is None or len(row) != len(columns) or not row[0].isdigit() or int(row[0]) != number:
            raise RunDirError(f"{path}: line {number + 1} is damaged (expected the row of update {number}, "
                              f"{len(columns)} fields)")
    return b"".join(lines[:update + 1])


def _parse_line(line: bytes) -> list[str] | None:
    """One CSV line's fields, or None if it is not text CSV (binary, NUL bytes, bad quoting)."""
    try:
        text = line.decode("utf-8")
        rows = list(csv.reader([text], strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(rows) != 1 or "\x00" in text:
        return None
    return rows[0]
