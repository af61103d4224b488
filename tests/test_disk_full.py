"""A full disk: training stops with "no space left on device: <path>", leaves no temporary
file, keeps its last checkpoint, never crashes, and resumes exactly once there is room."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssdinfluence import checkpoint, rundir
from ssdinfluence.rundir import DiskFullError
from ssdinfluence.train import train

from .test_resume import assert_same_run, config
from .test_train import read_log, read_metrics

ROOT = Path(__file__).parent.parent


def fail_fsync_after(monkeypatch, calls: int) -> None:
    """``os.fsync`` in :mod:`ssdinfluence.rundir` reports ENOSPC from its ``calls``-th call on
    (on a full disk a write's data may only fail to reach the disk at fsync)."""
    real, count = os.fsync, [0]

    def fsync(fd):
        count[0] += 1
        if count[0] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(rundir.os, "fsync", fsync)


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("old")
    fail_fsync_after(monkeypatch, 1)
    with pytest.raises(DiskFullError, match=f"^no space left on device: {path}$"):
        rundir.atomic_write(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_atomic_write_names_the_file_on_an_io_error_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("old")

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(rundir.os, "fsync", fsync)
    with pytest.raises(rundir.RunDirError, match=f"^{path}: cannot write it \\(Input/output error\\)$"):
        rundir.atomic_write(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_full_disk_is_recognised_behind_another_error():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("Error -2 while flushing")  # noqa: B904 (the zlib error of matplotlib's PDF writer)
    except RuntimeError as error:
        assert rundir.is_disk_full(error)
    assert not rundir.is_disk_full(RuntimeError("something else"))


def test_training_stops_on_a_full_disk_and_resumes_exactly(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        # each rewrite fsyncs its file, then the directory: config.json (1, 2), trajectories.h5
        # created for the first logged episode (3, 4), the checkpoint of update 2 (5, 6); the
        # disk is full for the checkpoint of update 4
        fail_fsync_after(patch, 7)
        with pytest.raises(DiskFullError, match=f"no space left on device: {out / 'checkpoint.pt'}"):
            train(config(out))
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "config.json", "metrics.csv",
                                                     "trajectories.h5"]  # no checkpoint.pt.tmp
    assert checkpoint.load(out)["update"] == 2  # the last one written
    straight = tmp_path / "straight"
    train(config(straight))
    train(config(out), resume=True)
    assert_same_run(out, (read_metrics(straight / "metrics.csv"), read_log(straight / "trajectories.h5")))


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp"],
                           capture_output=True)
    return probe.returncode == 0


TRAIN = [sys.executable, "-m", "ssdinfluence.cli", "run", "--env", "harvest", "--agents", "2", "--num-envs", "2",
         "--rollout-length", "16", "--bptt-length", "8", "--ppo-minibatches", "2", "--ppo-epochs", "2", "--horizon", "20",
         "--steps", "640", "--seed", "3", "--log-trajectories", "0,1", "--log-every", "1", "--log-observations",
         "--checkpoint-every", "2", "--quiet"]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` and mount to make a small tmpfs")
def test_a_real_full_disk_on_a_small_tmpfs(tmp_path):
    """In a private mount namespace: a 4 MiB tmpfs fills up mid-run (a checkpoint holding the
    views of the episodes in progress is ~3 MB, and its rewrite needs room for two); a resume while it is still full fails
    the same clean way; with room again the resumed run equals an uninterrupted one."""
    mnt, saved = tmp_path / "mnt", tmp_path / "saved"
    mnt.mkdir()
    run = mnt / "run"
    command = " ; ".join([
        f"mount -t tmpfs -o size=4m tmpfs {mnt}",
        f"{' '.join(TRAIN)} --out {run} > {tmp_path / 'first.log'} 2>&1; echo $? > {tmp_path / 'first.rc'}",
        f"ls -a {run} > {tmp_path / 'first.ls'}",
        f"{sys.executable} -m ssdinfluence.cli run --resume {run} --quiet > {tmp_path / 'second.log'} 2>&1; "
        f"echo $? > {tmp_path / 'second.rc'}",
        f"mount -o remount,size=64m {mnt}",
        f"{sys.executable} -m ssdinfluence.cli run --resume {run} --quiet > {tmp_path / 'third.log'} 2>&1; "
        f"echo $? > {tmp_path / 'third.rc'}",
        f"cp -r {run} {saved}",
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    subprocess.run(["unshare", "-rm", "sh", "-c", command], env=env, timeout=600, check=True)
    for name in ("first", "second"):
        log = (tmp_path / f"{name}.log").read_text()
        assert (tmp_path / f"{name}.rc").read_text().strip() == "1", log
        assert "no space left on device: " + str(run) in log, log
        assert "Traceback" not in log and "Segmentation" not in log, log
    assert ".tmp" not in (tmp_path / "first.ls").read_text()
    third = (tmp_path / "third.log").read_text()
    assert (tmp_path / "third.rc").read_text().strip() == "0", third
    assert "20 updates, 640 env steps" in third
    straight = tmp_path / "straight"
    train(config(straight, steps=640, log_observations=True))
    assert read_metrics(saved / "metrics.csv") == read_metrics(straight / "metrics.csv")
    (index_a, episodes_a), (index_b, episodes_b) = read_log(saved / "trajectories.h5"), \
        read_log(straight / "trajectories.h5")
    assert len(episodes_a) == len(episodes_b)
    for key in index_a:
        np.testing.assert_array_equal(index_a[key], index_b[key], err_msg=key)
    for a, b in zip(episodes_a, episodes_b, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_plot_on_a_full_disk_names_the_file_exits_2_and_leaves_nothing(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner
    from matplotlib.figure import Figure

    from ssdinfluence.cli import main

    from .test_analysis import fake_run

    fake_run(tmp_path / "run", [5.0, 6.0])
    monkeypatch.setattr(Figure, "savefig", enospc)
    out = tmp_path / "plots" / "curves.png"
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "run"), "-o", str(out)])
    assert result.exit_code == 2 and f"no space left on device: {out}" in " ".join(result.output.split())
    assert not result.exception or isinstance(result.exception, SystemExit)
    assert list((tmp_path / "plots").iterdir()) == []


def test_a_video_on_a_full_disk_raises_disk_full_naming_it_and_leaves_nothing(tmp_path, monkeypatch):
    iio = pytest.importorskip("imageio.v3")
    from ssdinfluence.render import write_video

    monkeypatch.setattr(iio, "imwrite", enospc)
    with pytest.raises(DiskFullError, match=f"no space left on device: {tmp_path / 'replay.gif'}"):
        write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "replay.gif")
    assert list(tmp_path.iterdir()) == []
