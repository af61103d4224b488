"""The command line through click's runner, and a real Ctrl-C on a training process."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssdinfluence.cli import main
from ssdinfluence.evaluate import evaluate
from ssdinfluence.rundir import locked
from ssdinfluence.trajectories import TrajectoryReader

SMALL = ["--env", "harvest", "--agents", "2", "--num-envs", "2", "--rollout-length", "16", "--bptt-length", "8",
         "--ppo-minibatches", "2", "--horizon", "20", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def test_run_resume_and_eval(tmp_path):
    out = str(tmp_path / "run")
    result = invoke("run", *SMALL, "--steps", "64", "--out", out, "--log-trajectories", "0,1", "--log-every", "1")
    assert result.exit_code == 0, result.output
    assert "2 updates, 64 env steps" in result.output
    result = invoke("run", "--resume", out, "--steps", "96", "--quiet")
    assert result.exit_code == 0, result.output
    assert "3 updates, 96 env steps" in result.output
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["update"] == 3
    record = str(tmp_path / "eval.h5")
    result = invoke("eval", out, "--episodes", "3", "--record", record)
    assert result.exit_code == 0, result.output
    assert "collective return" in result.output and "equality" in result.output
    with TrajectoryReader(record) as reader:
        assert reader.num_episodes == 3


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("run", *SMALL, "--steps", "32", "--out", str(out), "--log-trajectories", "0", "--log-every", "1")
    assert result.exit_code == 0, result.output
    return out


def snapshot(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != ".lock"}


def test_eval_record_never_writes_a_training_runs_files(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = snapshot(out)
    with locked(out):  # as a trainer holds it
        for name in ("metrics.csv", "trajectories.h5", "checkpoint.pt.tmp"):
            result = invoke("eval", str(out), "--episodes", "1", "--record", str(out / name), "--overwrite")
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
            text = " ".join(result.output.split())
            assert str(out / name) in text and "where a run is training" in text, result.output
    assert snapshot(out) == before
    result = invoke("eval", str(out), "--episodes", "1", "--record", str(out / "eval.h5"))
    assert result.exit_code == 0, result.output  # not one of the run's own files
    result = invoke("eval", str(out), "--episodes", "1", "--record", str(out / "trajectories.h5"), "--overwrite")
    assert result.exit_code == 0, result.output  # the run's log may be replaced once no run trains there


def test_eval_record_refuses_a_file_that_is_not_an_episode_log(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    before = snapshot(out)
    for target in (out / "metrics.csv", out / "checkpoint.pt", other):
        for flags in ([], ["--overwrite"]):
            result = invoke("eval", str(out), "--episodes", "1", "--record", str(target), *flags)
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
            text = " ".join(result.output.split())
            assert str(target) in text and "not an episode log" in text, result.output
    assert snapshot(out) == before and other.read_text() == "mine"


def test_eval_records_exactly_the_episodes_it_reports(trained_run, tmp_path):
    record = tmp_path / "eval.h5"
    result = invoke("eval", str(trained_run), "--episodes", "3", "--num-envs", "2", "--record", str(record))
    assert result.exit_code == 0, result.output
    assert "3 episodes" in result.output
    with TrajectoryReader(record) as reader:
        assert reader.num_episodes == 3
    measured = evaluate(trained_run, episodes=3, num_envs=2, record=str(record), overwrite=True)
    with TrajectoryReader(record) as reader:
        np.testing.assert_allclose(reader.episodes()["returns"], measured["returns"])
        np.testing.assert_allclose(reader.episodes()["efficiency"], measured["efficiency"])


def test_config_file_and_flags(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('env = "harvest"\nagents = 2\nnum_envs = 2\nrollout_length = 16\nbptt_length = 8\n'
                      'ppo_minibatches = 2\nsteps = 32\nlr = 0.01\n[env_kwargs]\nhorizon = 20\n')
    out = tmp_path / "run"
    result = invoke("run", "--config", str(config), "--lr", "0.002", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    saved = __import__("json").loads((out / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["agents"] == 2 and saved["env_kwargs"] == {"horizon": 20}


def test_preset_paper(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", *SMALL, "--steps", "32", "--preset", "paper", "--out", str(out), "--entropy-coef", "0.5")
    assert result.exit_code == 0, result.output
    saved = __import__("json").loads((out / "config.json").read_text())
    assert saved["lr"] == 0.00136 and saved["lr_end"] == 0.000028  # harvest baseline row
    assert saved["entropy_coef"] == 0.5  # the flag wins over the preset


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--env", "snake"], "'snake' is not one of"),
    (["run", "--steps", "lots"], "is not a number of steps"),
    (["run", "--agents", "11"], "too many agents for the map"),
    (["run", "--rollout-length", "30", "--bptt-length", "8"], "must be a multiple of bptt_length"),
    (["run", "--double-buffer", "--num-envs", "5", "--ppo-minibatches", "1"], "num_envs must be even, got 5"),
    (["run", "--log-trajectories", "0,99", "--num-envs", "4"], "log_trajectories must list env indices"),
    (["run", "--config", "/nonexistent/c.toml"], "cannot read config file"),
    (["run", "--resume", "/nonexistent/run"], "has no checkpoint.pt"),
    (["eval", "/nonexistent/run"], "no checkpoint at"),
    (["run", "--model", "telepathy"], "'telepathy' is not one of"),
    (["run", "--model", "influence", "--agents", "2", "--influencers", "2"], "influencers must be between 1 and"),
    (["run", "--divergence", "l2"], "'l2' is not one of"),
])
def test_bad_options_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a test that wrongly passed validation would train here
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unreadable_files_exit_2(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("steps = = 3\n")
    result = invoke("run", "--config", str(bad_toml))
    assert result.exit_code == 2 and "is not valid TOML" in result.output
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("stepz = 3\n")
    result = invoke("run", "--config", str(unknown))
    assert result.exit_code == 2 and "unknown keys ['stepz']" in result.output
    garbage = tmp_path / "checkpoint.pt"
    garbage.write_bytes(b"not a checkpoint")
    result = invoke("eval", str(garbage))
    assert result.exit_code == 2 and "cannot read checkpoint" in result.output


def test_existing_run_is_not_overwritten(tmp_path):
    out = str(tmp_path / "run")
    assert invoke("run", *SMALL, "--steps", "32", "--out", out).exit_code == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    result = invoke("run", *SMALL, "--steps", "32", "--out", out)
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    result = invoke("run", "--resume", out, "--lr", "0.1")
    assert result.exit_code == 2 and "cannot change lr when resuming" in result.output


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ssdinfluence.cli", "run", *SMALL, "--steps", "1e7", "--out", str(out),
               "--log-trajectories", "0", "--log-every", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, COLUMNS="200"))
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 8:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped early" in output and f"ssdinfluence run --resume {out}" in output
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert int(rows[-1]["update"]) == saved["update"] >= 8
    with TrajectoryReader(out / "trajectories.h5") as reader:
        assert reader.num_episodes >= 1
    result = invoke("run", "--resume", str(out), "--steps", str((saved["update"] + 1) * 32))
    assert result.exit_code == 0, result.output


def test_influence_model_trains_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", *SMALL[:2], "--agents", "3", *SMALL[4:], "--model", "influence", "--influencers", "1",
                    "--steps", "96", "--out", str(out), "--divergence", "jsd", "--influencee-reward",
                    "--log-trajectories", "0", "--log-every", "1")
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and float(rows[-1]["influence_agent_0"]) > 0
    assert float(rows[-1]["influence_1_on_0"]) == 0.0  # influencees exert nothing
    with TrajectoryReader(out / "trajectories.h5") as reader:
        episode = reader.episode(0)
        assert episode["influence"].shape == (20, 3) and episode["influence_pairs"].shape == (20, 3, 3)
        assert (episode["influence_pairs"][:, 0, 1:] >= 0).all() and episode["influence_pairs"][:, 1:, :].sum() == 0
    result = invoke("eval", str(out), "--episodes", "2", "--greedy")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("model", ["moa", "moa-baseline"])
def test_moa_models_train_end_to_end(tmp_path, model):
    out = tmp_path / "run"
    result = invoke("run", *SMALL[:2], "--agents", "3", *SMALL[4:], "--model", model, "--steps", "96",
                    "--out", str(out), "--log-trajectories", "0", "--log-every", "1", "--influence-weight", "0.5")
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert float(rows[-1]["moa_loss"]) > 0 and 0 <= float(rows[-1]["moa_accuracy"]) <= 1
    assert float(rows[-1]["influence_weight"]) == (0.0 if model == "moa-baseline" else 0.5)
    with TrajectoryReader(out / "trajectories.h5") as reader:
        assert reader.episode(0)["influence_pairs"].shape == (20, 3, 3)
    assert invoke("eval", str(out), "--episodes", "2").exit_code == 0


@pytest.mark.parametrize("model", ["comm", "comm-baseline"])
def test_comm_models_train_end_to_end(tmp_path, model):
    out = tmp_path / "run"
    result = invoke("run", *SMALL[:2], "--agents", "3", *SMALL[4:], "--model", model, "--steps", "96",
                    "--vocabulary", "4", "--out", str(out), "--log-trajectories", "0", "--log-every", "1")
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and float(rows[-1]["message_entropy"]) > 0
    with TrajectoryReader(out / "trajectories.h5") as reader:
        messages = reader.episode(0)["messages"]
        assert messages.shape == (20, 3) and messages.min() >= 0 and messages.max() < 4
    assert invoke("eval", str(out), "--episodes", "2", "--record", str(tmp_path / "e.h5")).exit_code == 0


def test_paper_preset_exists_for_every_model_and_env():
    from ssdinfluence.config import MODELS, build_config, preset_values
    from ssdinfluence.envs import ENV_NAMES

    for env in ENV_NAMES:
        for model in MODELS:
            values = preset_values("paper", env, model)
            config = build_config({"env": env, "model": model, **values})
            assert config.lr == values["lr"] and config.entropy_coef == values["entropy_coef"]
    assert preset_values("paper", "harvest", "influence")["influencers"] == 3
    assert preset_values("paper", "cleanup", "comm")["extrinsic_weight"] == 0.0
    assert preset_values("paper", "harvest", "moa")["moa_loss_weight"] == 10.911
