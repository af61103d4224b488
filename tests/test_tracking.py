"""Tracking: what --track writes, read back with TensorBoard's event reader and from W&B's offline
run file, compared with metrics.csv; a sweep tracks every trial; a missing extra names its install."""

from __future__ import annotations

import csv
import glob
import math
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssdinfluence.cli import main
from ssdinfluence.tracking import scalars, tag

SMALL = ["--env", "harvest", "--agents", "2", "--num-envs", "2", "--rollout-length", "16", "--bptt-length", "8",
         "--ppo-minibatches", "2", "--horizon", "20", "--quiet", "--log-trajectories", ""]


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200", **(env or {})})


def metrics(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return [{k: float(v) if v else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def expected_points(rows, column) -> list[tuple[int, float]]:
    """(env steps, value) of every update where the column is finite: what a tracker must log."""
    return [(int(r["env_steps"]), r[column]) for r in rows if math.isfinite(r[column])]


def test_tags_group_the_columns_and_skip_nan():
    assert [tag(c) for c in ("collective_return", "return_agent_1", "equality", "policy_loss", "entropy", "sps",
                             "env_s", "influence_agent_0", "moa_loss")] == [
        "episode/collective_return", "episode/return_agent_1", "episode/equality", "losses/policy_loss",
        "losses/entropy", "charts/sps", "charts/env_s", "influence/influence_agent_0", "losses/moa_loss"]
    assert scalars({"update": 3, "env_steps": 96, "sps": 10.0, "collective_return": math.nan, "episodes": 0}) == {
        "charts/sps": 10.0, "charts/episodes": 0.0}


def test_run_track_tensorboard_event_file_holds_every_update(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = invoke("run", *SMALL, "--steps", "160", "--out", str(out), "--track", "tensorboard")
    assert result.exit_code == 0, result.output
    assert f"TensorBoard events in {out / 'tensorboard'}" in result.output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = metrics(out)
    assert len(rows) == 5
    for column in ("collective_return", "return_agent_0", "policy_loss", "sps"):
        logged = [(e.step, e.value) for e in events.Scalars(tag(column))]
        want = expected_points(rows, column)
        assert [s for s, _ in logged] == [s for s, _ in want] and len(want) >= 1
        assert [v for _, v in logged] == pytest.approx([v for _, v in want], rel=1e-5)
    assert len(expected_points(rows, "collective_return")) < len(rows)  # NaN updates were left out, not logged


def read_wandb_history(run_file) -> list[dict]:
    """The history records of a W&B offline run file (a LevelDB-style log of protobuf records)."""
    import json

    from wandb.proto import wandb_internal_pb2

    data, block, pos, parts, history = Path(run_file).read_bytes(), 32768, 7, [], []  # 7: the file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            if record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
    return history


def test_run_track_wandb_offline_logs_every_update(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    result = invoke("run", *SMALL, "--steps", "96", "--out", str(out), "--track", "wandb",
                    "--wandb-project", "tests", env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.exit_code == 0, result.output
    run_id = (out / "wandb_id").read_text().strip()
    assert f"W&B run {run_id}" in result.output and "offline" in result.output
    (run_file,) = glob.glob(str(out / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    history = read_wandb_history(run_file)
    rows = metrics(out)
    assert [h["_step"] for h in history] == [int(r["env_steps"]) for r in rows]
    for column in ("collective_return", "value_loss", "lr"):
        logged, want = [(h["_step"], h[tag(column)]) for h in history if tag(column) in h], expected_points(rows, column)
        assert [s for s, _ in logged] == [s for s, _ in want] and len(want) >= 1
        assert [v for _, v in logged] == pytest.approx([v for _, v in want], rel=1e-9)


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_sweep_tracks_every_trial(kind, tmp_path, monkeypatch):
    """Each trial, trained in a worker process, is tracked as its own run: all its updates."""
    pytest.importorskip(kind)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the workers inherit the environment
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = invoke("sweep", "--env", "harvest", "--seeds", "2", "--steps", "32", "--out", "s", "--quiet",
                    "--workers", "2", "--track", kind, "--set", "agents=2", "--set", "num_envs=1",
                    "--set", "rollout_length=8", "--set", "bptt_length=8", "--set", "ppo_minibatches=1",
                    "--set", 'log_trajectories=""', "--set", "env_kwargs.horizon=20")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        run_dir = tmp_path / "s" / "runs" / f"harvest-baseline-s{seed}"
        if kind == "tensorboard":
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            events = EventAccumulator(str(run_dir / "tensorboard"))
            events.Reload()
            steps = [e.step for e in events.Scalars("charts/sps")]
            losses = [e.value for e in events.Scalars("losses/policy_loss")]
        else:
            (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
            history = read_wandb_history(run_file)
            steps, losses = [h["_step"] for h in history], [h["losses/policy_loss"] for h in history]
        assert steps == [8, 16, 24, 32]
        assert losses == pytest.approx([r["policy_loss"] for r in metrics(run_dir)], rel=1e-5)


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_missing_extra_names_its_pip_install(kind, command, tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.chdir(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == kind else real(name, *a))
    result = invoke(command, "--track", kind, *(["--steps", "32", "--env", "harvest"] if command == "run" else []))
    assert result.exit_code == 2, result.output
    assert f'pip install "ssdinfluence[{kind}]"' in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()  # nothing started


def test_wandb_goes_offline_without_a_key_or_a_server(tmp_path, monkeypatch):
    import socket

    from ssdinfluence.tracking import _wandb_reachable

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert not _wandb_reachable()  # a server but no key
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
        assert _wandb_reachable()  # a key and a server that accepts connections
    assert not _wandb_reachable(timeout=1.0)  # the key, but the server is gone
