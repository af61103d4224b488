"""Nothing lost, nothing twice: runs interrupted at many points resume to exactly the
uninterrupted run (metrics and the whole trajectory log), one writer per run directory, and a
failed resume changes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssdinfluence import checkpoint, rundir
from ssdinfluence.cli import main
from ssdinfluence.rundir import RunDirError
from ssdinfluence.train import train
from ssdinfluence.trajectories import TrajectoryWriter

from .test_train import read_log, read_metrics, tiny_config

UPDATES = 6


def config(out, **overrides):
    # an episode ends every 20 / 16 updates in both logged envs; checkpoints after 2, 4, 6
    return tiny_config(out, **{"steps": UPDATES * 32, "checkpoint_every": 2, **overrides})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(config(out))
    return read_metrics(out / "metrics.csv"), read_log(out / "trajectories.h5")


def assert_same_run(out: Path, straight) -> None:
    metrics, (index, episodes) = straight
    assert read_metrics(out / "metrics.csv") == metrics
    got_index, got_episodes = read_log(out / "trajectories.h5")
    assert len(got_episodes) == len(episodes)  # no episode lost, none twice
    for key in index:
        np.testing.assert_array_equal(got_index[key], index[key], err_msg=key)
    for a, b in zip(got_episodes, episodes, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way handles it."""


def interrupt_after(monkeypatch, owner, name: str, calls: int) -> None:
    """Make ``owner.name`` raise :class:`Interrupt` right after its ``calls``-th call returns."""
    original = getattr(owner, name)
    count = [0]

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        count[0] += 1
        if count[0] == calls:
            raise Interrupt
        return result

    monkeypatch.setattr(owner, name, wrapped)


# Points across the run: after the k-th logged episode (6 logged by update 4), after the k-th
# metrics row, after the k-th checkpoint. The interrupted run never reaches update 6.
POINTS = [(TrajectoryWriter, "append_episode", k) for k in (1, 2, 3, 4, 5)] + \
         [(rundir.MetricsLog, "write", k) for k in (3, 5)] + [(checkpoint, "save", 2)]


@pytest.mark.parametrize(("owner", "name", "calls"), POINTS, ids=[f"{o.__name__}.{n}-{k}" for o, n, k in POINTS])
def test_resume_after_an_interruption_restores_the_whole_run(tmp_path, monkeypatch, straight, owner, name, calls):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, owner, name, calls)
        with pytest.raises(Interrupt):
            train(config(out))
    if not (out / "checkpoint.pt").exists():  # interrupted before the first checkpoint: start again
        train(config(out))
    else:
        train(config(out), resume=True)
    assert_same_run(out, straight)


def test_resume_after_a_double_ctrl_c_restores_the_whole_run(tmp_path, monkeypatch, straight):
    """A second Ctrl-C raises KeyboardInterrupt wherever training is (here: mid-rollout)."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        original, count = TrajectoryWriter.append_episode, [0]

        def append(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            count[0] += 1
            if count[0] == 4:
                signal.raise_signal(signal.SIGINT)  # the first asks to stop after this update
                signal.raise_signal(signal.SIGINT)  # the second interrupts at once
            return result

        patch.setattr(TrajectoryWriter, "append_episode", append)
        with pytest.raises(KeyboardInterrupt):
            train(config(out))
    train(config(out), resume=True)
    assert_same_run(out, straight)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from ssdinfluence import rundir
    from ssdinfluence.train import train
    from tests.test_resume import config

    rows = int(sys.argv[2])
    original, count = rundir.MetricsLog.write, [0]

    def write(self, row):
        original(self, row)
        count[0] += 1
        if count[0] == rows:
            os.kill(os.getpid(), signal.SIGKILL)

    rundir.MetricsLog.write = write
    train(config(sys.argv[1]))
""")


@pytest.mark.parametrize("rows", [3, 5])
def test_resume_after_kill_9_restores_the_whole_run(tmp_path, straight, rows):
    """A real SIGKILL once metrics.csv has ``rows`` rows (checkpoint 2 or 4 behind it): the
    HDF5 file is left "open for writing" and the rows after the checkpoint are on disk."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(out), str(rows)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(read_metrics(out / "metrics.csv")) == rows
    train(config(out), resume=True)
    assert_same_run(out, straight)


def test_a_second_process_is_refused_before_it_touches_anything(tmp_path):
    out = tmp_path / "run"
    train(config(out), max_updates=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ssdinfluence import rundir
        with rundir.locked({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="another process is training in this run directory"):
            train(config(out), resume=True)
        with pytest.raises(RunDirError, match="another process"):
            train(config(out))
        result = CliRunner().invoke(main, ["run", "--resume", str(out), "--quiet"])
        assert result.exit_code == 2 and "another process is training in this run directory" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    train(config(out), resume=True)  # the lock went with its process


def test_the_lock_also_keeps_out_a_second_writer_in_the_same_process(tmp_path):
    with rundir.locked(tmp_path / "run"):
        with pytest.raises(RunDirError):
            train(config(tmp_path / "run"))


def test_a_refused_run_leaves_no_tracker_files(tmp_path):
    """The command takes the lock before its tracker writes into the run directory."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    train(config(out), max_updates=2)
    with rundir.locked(out):
        result = CliRunner().invoke(main, ["run", "--resume", str(out), "--track", "tensorboard", "--quiet"])
    assert result.exit_code == 2 and "another process is training in this run directory" in result.output
    assert not (out / "tensorboard").exists()


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def flip_a_weight_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor's data, leaving the archive's structure intact
    (what ``torch.load`` alone accepts: it does not check the members' CRCs)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26:member.header_offset + 30])
    start = member.header_offset + 30 + name_length + extra_length
    data[start + member.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "mismatched", "empty", "weight-byte",
                                    "nan-weights"])
def test_a_resume_from_a_damaged_checkpoint_fails_naming_it_and_changes_nothing(tmp_path, damage):
    out = tmp_path / "run"
    train(config(out), max_updates=3)
    path = out / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "weight-byte":
        flip_a_weight_byte(path)
    elif damage == "nan-weights":  # a diverged run's checkpoint, written intact
        saved = torch.load(path, weights_only=True)
        next(iter(saved["model"].values())).fill_(float("nan"))
        checkpoint.save(path, {k: v for k, v in saved.items() if k not in ("format", "format_version")})
    else:  # another run's checkpoint (3 agents) copied in
        train(config(tmp_path / "other", agents=3), max_updates=2)
        path.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    before = snapshot(out)
    resumed = json.loads((out / "config.json").read_text())
    resumed["steps"] = 10 * 32
    from ssdinfluence.config import build_config

    with pytest.raises(checkpoint.CheckpointError, match=re.escape(str(path))):
        train(build_config(resumed), resume=True)
    assert snapshot(out) == before  # config.json keeps its steps; metrics and log unchanged


@pytest.mark.parametrize("damage", ["torn-last-row", "binary-last-row", "damaged-kept-row", "empty", "short",
                                    "other-header"])
def test_resume_with_a_damaged_metrics_file(tmp_path, straight, damage):
    out = tmp_path / "run"
    train(config(out), max_updates=4)  # checkpoint at update 4
    path = out / "metrics.csv"
    lines = path.read_bytes().splitlines(keepends=True)  # header + 4 rows
    repairable = damage in ("torn-last-row", "binary-last-row")
    if damage == "torn-last-row":  # a killed run was writing row 5
        lines.append(lines[-1].replace(b"4,", b"5,", 1)[:25])
    elif damage == "binary-last-row":
        lines.append(b"\x00\xff\xfe garbage \x00\n")
    elif damage == "damaged-kept-row":
        lines[2] = b"2,64,\x00\xff\n"
    elif damage == "empty":
        lines = []
    elif damage == "short":
        lines = lines[:3]
    else:
        lines[0] = b"a,b,c\r\n"
    path.write_bytes(b"".join(lines))
    if repairable:
        train(config(out), resume=True)
        assert_same_run(out, straight)
        return
    before = snapshot(out)
    with pytest.raises(RunDirError, match=re.escape(str(path))):
        train(config(out), resume=True)
    assert snapshot(out) == before


def test_a_killed_writers_temporary_files_are_removed_at_once(tmp_path):
    """A kill during a checkpoint's write leaves checkpoint.pt.tmp (as large as a checkpoint:
    on a full disk it keeps the disk full); the next run in the directory removes it before
    it trains, not only at its first checkpoint."""
    out = tmp_path / "run"
    train(config(out), max_updates=2)
    (out / "checkpoint.pt.tmp").write_bytes(b"x" * 1000)

    def stop(row):
        raise Interrupt  # after update 3: no checkpoint written yet (they come every 2)

    with pytest.raises(Interrupt):
        train(config(out), resume=True, on_update=stop)
    assert not (out / "checkpoint.pt.tmp").exists()
