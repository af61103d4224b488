"""The command line's shape: a flag for every Config field, the commands that read saved runs
without torch, report before any episode has ended, and what the live display shows."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ssdinfluence.cli import main
from ssdinfluence.cli.training import LiveRows, _format_duration, cell, eta_seconds, run
from ssdinfluence.config import Config
from ssdinfluence.options import option_of

from .test_analysis import fake_sweep

SMALL = ["--env", "harvest", "--agents", "2", "--num-envs", "2", "--rollout-length", "16", "--bptt-length", "8",
         "--ppo-minibatches", "2", "--quiet", "--log-trajectories", ""]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "200"})


def test_every_config_field_is_a_flag_of_run_with_its_help():
    options = {param.name: param for param in run.params}
    for field in dataclasses.fields(Config):
        help_text = option_of(field).help  # LookupError: a field not declared with option()
        assert help_text[:1].isalpha() and help_text.endswith("."), f"Config.{field.name}: help is not a sentence"
        assert field.name in options, f"Config.{field.name} has no flag"
        flag = "--" + field.name.replace("_", "-")
        assert flag in options[field.name].opts
        assert options[field.name].help.startswith(help_text)
        assert options[field.name].default is None or options[field.name].multiple  # "not given" by default


def test_generated_flags_reach_the_config(tmp_path):
    """Fields that had no flag before (gamma, value_coef, booleans, env_kwargs) reach config.json."""
    out = tmp_path / "run"
    result = invoke("run", *SMALL, "--steps", "32", "--out", out, "--gamma", "0.9", "--value-coef", "0.25",
                    "--no-normalise-advantages", "--lr-anneal-steps", "1e3", "--env-kwargs", "horizon=30",
                    "--env-kwargs", "apple_reward=2.0", "--inequity-alpha", "4")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["gamma"] == 0.9 and saved["value_coef"] == 0.25 and saved["normalise_advantages"] is False
    assert saved["lr_anneal_steps"] == 1000 and saved["inequity_alpha"] == 4.0
    assert saved["env_kwargs"] == {"horizon": 30, "apple_reward": 2.0}


@pytest.mark.parametrize(("args", "message"), [
    (["--gamma", "1.5"], "gamma must be in [0, 1], got 1.5"),
    (["--env-kwargs", "horizon"], "is not KEY=VALUE"),
    (["--env-kwargs", "colour=3"], "colour"),
    (["--reward-transform", "greedy"], "'greedy' is not one of"),
])
def test_generated_flags_reject_bad_values_with_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "--steps", "32", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny run with logged episodes, and a sweep directory of fake finished trials."""
    root = tmp_path_factory.mktemp("saved")
    result = invoke("run", *SMALL, "--steps", "64", "--horizon", "20", "--out", root / "run",
                    "--log-trajectories", "0", "--log-every", "1")
    assert result.exit_code == 0, result.output
    return root / "run", fake_sweep(root / "sweep")


def test_reading_commands_do_not_import_torch(saved, tmp_path):
    """Each command in a fresh interpreter, then sys.modules: torch (and the trainer) never load."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("imageio")
    run_dir, sweep_dir = saved
    commands = [["--help"], ["run", "--help"], ["sweep", "--help"], ["analyze", run_dir], ["compare", run_dir],
                ["plot", run_dir, "-o", tmp_path / "c.png"], ["report", sweep_dir, "-o", tmp_path / "r.png"],
                ["render", run_dir, "-o", tmp_path / "r.gif", "--frames", "0:3"]]
    code = ("import sys\nfrom ssdinfluence.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('LOADED', sorted(m for m in ('torch', 'ssdinfluence.train', 'pettingzoo') if m in sys.modules))")
    for command in commands:
        out = subprocess.run([sys.executable, "-c", code, *map(str, command)], capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr[-2000:])
        assert out.stdout.splitlines()[-1] == "LOADED []", command
    help_only = subprocess.run([sys.executable, "-c", "import sys\nfrom ssdinfluence.cli import main\n"
                                "print(sorted(m for m in ('numba', 'numpy', 'h5py', 'rich') if m in sys.modules))"],
                               capture_output=True, text=True, check=True)
    assert help_only.stdout.strip() == "[]"  # what makes --help fast: bench/cli_speed.py times it


def test_report_with_nothing_to_plot_prints_the_table_and_exits_0(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep")
    for trial in ("baseline-s0", "baseline-s1"):  # as after a tiny sweep: no update ended an episode
        path = sweep / "runs" / trial / "metrics.csv"
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            for key in row:
                if key in ("collective_return", "efficiency", "equality", "sustainability", "peace") \
                        or key.startswith("return_agent_"):
                    row[key] = ""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    result = invoke("report", sweep)
    assert result.exit_code == 0, result.output
    assert "4 trials: 1 failed, 2 finished, 1 interrupted" in result.output and "0,1" in result.output  # the table
    assert "no curves yet" in result.output and not (sweep / "curves.png").exists()
    result = invoke("report", sweep, "--metric", "happiness")  # a metric that does not exist is still an error
    assert result.exit_code == 2 and "'happiness' is not a column" in result.output


def row(update, episodes, collective=math.nan, steps=None, sps=100.0):
    return {"update": update, "env_steps": steps or 32 * update, "sps": sps, "episodes": episodes,
            "collective_return": collective, "return_agent_0": collective / 2, "efficiency": 0.5 if episodes else math.nan,
            "equality": math.nan, "sustainability": math.nan, "peace": 2.0 if episodes else math.nan,
            "policy_loss": 0.1 * update}


def test_live_rows_keep_the_last_episode_values_marked_with_their_update():
    live = LiveRows()
    shown, note = live(row(1, 0))
    assert math.isnan(shown["collective_return"]) and note == "no episode has ended yet"
    shown, note = live(row(2, 3, collective=12.0))
    assert shown["collective_return"] == 12.0 and note == ""
    shown, note = live(row(3, 0))
    assert shown["collective_return"] == 12.0 and shown["return_agent_0"] == 6.0 and shown["efficiency"] == 0.5
    assert shown["policy_loss"] == pytest.approx(0.3) and shown["update"] == 3  # the rest is this update's
    assert note == "(episodes of update 2)" and shown["episodes"] == 3  # the count of the episodes shown


def test_undefined_measures_show_as_a_dash():
    assert [cell(v, ".1f") for v in (math.nan, None, math.inf, -2.25)] == ["-", "-", "-", "-2.2"]


def test_eta_from_the_first_update():
    assert eta_seconds(row(1, 0, steps=1000, sps=500.0), total_steps=61_000) == 120.0
    assert _format_duration(eta_seconds(row(1, 0, steps=1000, sps=500.0), 61_000)) == "0:02:00"
    assert _format_duration(3725.4) == "1:02:05" and _format_duration(math.nan) == "-:--:--"


def test_quiet_lines_show_the_last_episode_values(tmp_path):
    """Horizon 35 with 16 steps per env and update: episodes end in updates 3, 5, 7, 9, not 10."""
    out = tmp_path / "run"
    result = invoke("run", *SMALL, "--steps", "320", "--horizon", "35", "--out", out)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("update 10:")]
    assert "(episodes of update 9)" in line and "nan" not in line
    assert not [line for line in result.output.splitlines() if line.startswith("training")]  # no progress bar
