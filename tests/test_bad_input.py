"""Damaged files and bad values: exit code 2 with a message naming the file or the value, in
every command, and nothing created or changed; the library raises ValueError."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ssdinfluence
from ssdinfluence.cli import main
from ssdinfluence.config import build_config, rollout_bytes
from ssdinfluence.sweep import MANIFEST_FORMAT
from ssdinfluence.trajectories import TrajectoryReader

SMALL = ["--env", "harvest", "--agents", "2", "--num-envs", "2", "--rollout-length", "16", "--bptt-length", "8",
         "--ppo-minibatches", "2", "--horizon", "20", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "300"})


def assert_refused(result, *words):
    """Exit code 2, no traceback, and the message says ``words``."""
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())
    for word in words:
        assert word in text, (word, result.output)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "good"
    result = invoke("run", *SMALL, "--steps", "96", "--out", out, "--log-trajectories", "0,1", "--log-every", "1",
                    "--checkpoint-every", "1")
    assert result.exit_code == 0, result.output
    return out


def copy_run(good_run, tmp_path, name="run") -> Path:
    out = tmp_path / name
    shutil.copytree(good_run, out)
    return out


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def damage_checkpoint(out: Path, how: str, tmp_path: Path) -> None:
    path = out / "checkpoint.pt"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif how == "garbage":
        path.write_bytes(os.urandom(5000))
    elif how == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:  # mismatched: a checkpoint of a 3-agent run
        other = tmp_path / "other"
        result = invoke("run", *SMALL, "--agents", "3", "--steps", "32", "--out", other)
        assert result.exit_code == 0, result.output
        path.write_bytes((other / "checkpoint.pt").read_bytes())


@pytest.mark.parametrize("how", ["truncated", "garbage", "foreign", "mismatched"])
def test_run_resume_and_eval_refuse_a_damaged_checkpoint(good_run, tmp_path, how):
    out = copy_run(good_run, tmp_path)
    damage_checkpoint(out, how, tmp_path)
    before = snapshot(out)
    assert_refused(invoke("run", "--resume", out, "--steps", "160", "--quiet"), str(out / "checkpoint.pt"))
    assert snapshot(out) == before  # config.json keeps its steps
    if how != "mismatched":  # a 3-agent checkpoint is a good checkpoint for eval
        assert_refused(invoke("eval", out, "--episodes", "1"), "checkpoint", str(out))


@pytest.mark.parametrize("content", ["", '{"env": "harvest", ', "[1, 2]", '{"env": "harvest", "agents": "x"}'])
def test_run_resume_refuses_a_damaged_config_json(good_run, tmp_path, content):
    out = copy_run(good_run, tmp_path)
    (out / "config.json").write_text(content)
    before = snapshot(out)
    assert_refused(invoke("run", "--resume", out, "--quiet"), str(out / "config.json"))
    assert snapshot(out) == before


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_run_resume_refuses_a_damaged_trajectory_log(good_run, tmp_path, how):
    out = copy_run(good_run, tmp_path)
    path = out / "trajectories.h5"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[how])
    before = snapshot(out)
    assert_refused(invoke("run", "--resume", out, "--steps", "160", "--quiet"), str(path))
    assert snapshot(out) == before


def test_run_resume_refuses_a_damaged_metrics_file(good_run, tmp_path):
    out = copy_run(good_run, tmp_path)
    lines = (out / "metrics.csv").read_bytes().splitlines(keepends=True)
    lines[1] = b"\x00\x01binary\xff\n"
    (out / "metrics.csv").write_bytes(b"".join(lines))
    before = snapshot(out)
    assert_refused(invoke("run", "--resume", out, "--quiet"), str(out / "metrics.csv"), "line 2 is damaged")
    assert snapshot(out) == before


def test_a_truncated_trajectory_file_is_not_reported_as_locked(good_run, tmp_path):
    """HDF5 reports a truncated file with "sblock" (superblock) in its message."""
    path = tmp_path / "trajectories.h5"
    data = (good_run / "trajectories.h5").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as error:
        TrajectoryReader(path)
    assert "truncated" in str(error.value) and "another process" not in str(error.value)
    assert "locked" not in str(error.value)


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_analyze_and_render_refuse_a_damaged_trajectory_log(good_run, tmp_path, how):
    out = copy_run(good_run, tmp_path)
    path = out / "trajectories.h5"
    path.write_bytes(path.read_bytes()[:3000] if how == "truncated" else b"")
    assert_refused(invoke("analyze", out), str(path), "truncated" if how == "truncated" else "empty file")
    assert_refused(invoke("render", out, "-o", tmp_path / "x.gif"), str(path))


@pytest.mark.parametrize("how", ["short-rows-only", "other-agents", "not-numbers"])
def test_analyze_plot_and_report_refuse_a_damaged_metrics_file(good_run, tmp_path, how):
    out = copy_run(good_run, tmp_path)
    path = out / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    if how == "short-rows-only":  # every row cut by a kill or an editor
        text = lines[0] + "".join(line[:15] + "\n" for line in lines[1:])
        words = ["no complete row"]
    elif how == "other-agents":
        text = lines[0].replace("return_agent_1", "return_agent_7") + "".join(lines[1:])
        words = ["'return_agent_1'", "config.json (2 agents)"]
    else:
        text = lines[0] + lines[1].replace(",", ",x", 1) + "".join(lines[2:])
        words = ["line 2 is damaged"]
    path.write_text(text)
    assert_refused(invoke("analyze", out), str(path), *words)
    assert_refused(invoke("plot", out, "-o", tmp_path / "x.png"), str(path), *words)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.move(out, sweep / "trial")
    (sweep / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "trials": [
        {"id": "trial", "run_dir": "trial", "status": "finished", "error": None}]}))
    assert_refused(invoke("report", sweep, "--no-plot"), str(sweep / "trial" / "metrics.csv"), *words)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("agents", "x", "agents must be an integer"), ("agents", None, "agents must be an integer"),
    ("agents", [2], "agents must be an integer"), ("model", None, "model must be a string"),
    ("seed", "x", "seed must be an integer"), ("env", 5, "env must be a string"),
    ("agents", 1_000_000_000, "too many agents for the map"),
])
def test_analyze_compare_and_plot_refuse_a_wrong_config_field_naming_it(good_run, tmp_path, field, value, words):
    out = copy_run(good_run, tmp_path)
    path = out / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    assert_refused(invoke("analyze", out), str(path), words)
    assert_refused(invoke("compare", out, good_run), str(path), words)
    assert_refused(invoke("plot", out, "-o", tmp_path / "x.png"), str(path), words)


@pytest.mark.parametrize("content", ["", "{", "[]"])
def test_report_refuses_a_damaged_manifest_naming_it(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    assert_refused(invoke("report", tmp_path, "--no-plot"), str(tmp_path / "manifest.json"))


def test_eval_record_refuses_an_existing_file_unless_overwrite(good_run, tmp_path):
    out = copy_run(good_run, tmp_path)
    log = out / "trajectories.h5"
    before = log.read_bytes()
    assert_refused(invoke("eval", out, "--episodes", "1", "--record", log), str(log), "--overwrite")
    assert log.read_bytes() == before
    result = invoke("eval", out, "--episodes", "1", "--record", log, "--overwrite")
    assert result.exit_code == 0, result.output
    with TrajectoryReader(log) as reader:
        assert reader.num_episodes >= 1 and reader.episodes()["update"].max() == 0  # eval's own episodes


BAD_RUNS = [
    (["--seed", str(2**64 - 1)], "seed must be in 0..2**63 - 1"),
    (["--lr", "inf"], "lr must be a finite number"),
    (["--entropy-coef", "nan"], "entropy_coef must be a finite number"),
    (["--influence-weight", "inf"], "influence_weight must be a finite number"),
    (["--num-envs", "1000000"], "GiB for the rollout"),
    (["--lr", "1e308"], "lr must be in (0, 1]"),
    (["--entropy-coef", "1e308"], "entropy_coef must be <= 10000"),
    (["--value-coef", "1e300"], "value_coef must be <= 10000"),
    (["--log-trajectories", "0,0"], "log_trajectories lists an env twice: '0,0'"),
    (["--threads", "10000"], "threads must be in 0.."),
    (["--inequity-alpha", "1e308", "--reward-transform", "inequity"], "inequity_alpha must be <= 10000"),
    (["--num-envs", "3", "--ppo-minibatches", "4"], "must divide the 6 BPTT sequences per update (num_envs x "
     "rollout_length / bptt_length): set ppo_minibatches to 3 (--ppo-minibatches 3)"),
    (["--horizon", "50", "--env-kwargs", "horizon=0"], "--horizon 50 and --env-kwargs horizon=0 both set"),
    (["--steps", "nan"], "'nan' must be a whole number of steps >= 1"),
    (["--steps", "inf"], "'inf' must be a whole number of steps >= 1"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_RUNS, ids=[" ".join(f) for f, _ in BAD_RUNS])
def test_run_refuses_bad_values_before_creating_anything(tmp_path, flags, message):
    out = tmp_path / "run"
    assert_refused(invoke("run", *SMALL, "--steps", "64", *flags, "--out", out), message)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_run_refuses_cuda_without_cuda(tmp_path):
    assert_refused(invoke("run", *SMALL, "--steps", "64", "--device", "cuda", "--out", tmp_path / "run"),
                   "CUDA is not available")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("toml", "message"), [
    ('env = "harvest"\n[env_kwargs]\nhorizon = "x"\n', "horizon must be an integer, got 'x'"),
    ('env = "harvest"\nenv_kwargs = 5\n', "env_kwargs must be a table"),
    ('env = "harvest"\n[env_kwargs]\napple_reward = nan\n', "apple_reward must be a finite number"),
])
def test_run_refuses_bad_env_kwargs_in_a_config_file(tmp_path, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    assert_refused(invoke("run", "--config", config, "--out", tmp_path / "run", "--quiet"), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "nan"], "'nan' must be a whole number of steps >= 1"),
    (["--steps", "64", "--set", "env_kwargs.horizon=x"], "horizon must be an integer"),
    (["--steps", "64", "--threads-per-trial", "10000"], "threads must be in 0.."),
    (["--steps", "64", "--set", "model=foo"], "--models baseline and --set model=foo both set the model"),
    (["--steps", "64", "--models", ""], "unknown model(s) ''"),
])
def test_sweep_refuses_bad_values_before_creating_anything(tmp_path, flags, message):
    out = tmp_path / "sweep"
    assert_refused(invoke("sweep", "--env", "harvest", "--models", "baseline", "--seeds", "1", *flags,
                          "--out", out, "--quiet"), message)
    assert not out.exists()


def test_rollout_refuses_more_threads_than_the_cores_use():
    assert_refused(invoke("rollout", "--threads", "10000"), "threads must be in 0..")


@pytest.mark.parametrize(("config", "words"), [('{"agents": "x"}', "agents must be an integer"),
                                               ("{", "cannot read the run's configuration")])
def test_run_resume_names_a_damaged_config_json_even_with_a_new_step_count(good_run, tmp_path, config, words):
    out = copy_run(good_run, tmp_path)
    path = out / "config.json"
    path.write_text(config if config == "{" else json.dumps({**json.loads(path.read_text()), **json.loads(config)}))
    before = snapshot(out)
    assert_refused(invoke("run", "--resume", out, "--steps", "200", "--quiet"), str(path), words)
    assert snapshot(out) == before


@pytest.mark.parametrize("damage", ["config.json", "metrics.csv"])
def test_analyze_names_the_run_file_it_cannot_read(good_run, tmp_path, damage):
    out = copy_run(good_run, tmp_path)
    (out / damage).write_bytes(b"" if damage == "config.json" else os.urandom(3000))
    assert_refused(invoke("analyze", out), str(out / damage))


# ---------------------------------------------------------------------------- the library


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"horizon": 1.5}, "horizon must be an integer"),
    ({"horizon": "20"}, "horizon must be an integer"),
    ({"seed": 1.5}, "seed must be a non-negative integer"),
    ({"seed": "3"}, "seed must be a non-negative integer"),
    ({"seed": True}, "seed must be a non-negative integer"),
    ({"seed": 2**64}, "seed must be a non-negative integer below 2**64"),
    ({"apple_reward": math.nan}, "apple_reward must be a finite number"),
    ({"fire_cost": math.inf}, "fire_cost must be a finite number"),
    ({"draw_beams": "yes"}, "draw_beams must be true or false"),
    ({"regrowth_probs": (0.1, math.nan, 0.1, 0.1)}, "regrowth_probs must be a sequence of finite numbers"),
])
def test_make_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ssdinfluence.make("harvest", num_agents=2, **kwargs)


def test_reset_refuses_seeds_out_of_range():
    env = ssdinfluence.make("harvest", num_agents=2)
    obs_max, _ = env.reset(seed=2**64 - 1)
    obs_max = obs_max.copy()
    for seed in (2**64, -1, 1.0, "0"):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            env.reset(seed=seed)
    np.testing.assert_array_equal(env.observe()[0], obs_max)  # a refused reset changes nothing


def test_eval_and_rollout_refuse_more_envs_than_memory_holds(good_run, tmp_path):
    assert_refused(invoke("eval", good_run, "--episodes", "1000000", "--num-envs", "1000000"),
                   "GiB, more than this machine's", "lower num_envs")
    assert_refused(invoke("rollout", "--num-envs", "100000000"), "GiB, more than this machine's", "lower num_envs")


def test_make_vec_reset_refuses_seeds_with_the_packages_own_error():
    pytest.importorskip("gymnasium")
    envs = ssdinfluence.make_vec("harvest", num_envs=1, num_agents=2)
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed must be a non-negative integer below 2\\*\\*64"):
            envs.reset(seed=seed)


def test_make_refuses_more_envs_than_memory_holds_before_allocating():
    from ssdinfluence.envs.base import env_bytes
    from ssdinfluence.threads import host_memory

    env = ssdinfluence.make("cleanup", num_envs=3, num_agents=5)
    allocated = sum(a.nbytes for a in vars(env).values() if isinstance(a, np.ndarray))
    allocated += sum(a.nbytes for a in env._state.values())
    assert env_bytes(3, 5, env.layout.shape) >= 0.9 * allocated  # the estimate counts what is there
    too_many = int(host_memory() / env_bytes(1, 5, env.layout.shape)) + 1
    with pytest.raises(ValueError, match="GiB, more than this machine's .* lower num_envs"):
        ssdinfluence.make("cleanup", num_envs=too_many, num_agents=5)


def test_set_state_refuses_non_finite_returns():
    env = ssdinfluence.make("harvest", num_agents=2)
    env.reset()
    state = env.get_state()
    state["returns"][0, 1] = np.nan
    with pytest.raises(ValueError, match="returns"):
        env.set_state(state)


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": math.inf}, "lr must be a finite number"),
    ({"entropy_coef": math.nan}, "entropy_coef must be a finite number"),
    ({"entropy_coef": -0.1}, "entropy_coef must be >= 0"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
    ({"seed": 2**63}, "seed must be in 0..2**63 - 1"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"env_kwargs": {"horizon": "x"}}, "horizon must be an integer"),
    ({"num_envs": 10**7}, "GiB for the rollout"),
])
def test_build_config_refuses_bad_values(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_config({"env": "harvest", "agents": 2, **values})


def test_the_memory_estimate_counts_the_rollout_views():
    config = build_config({"env": "harvest", "agents": 5, "num_envs": 32, "rollout_length": 128})
    views = 128 * 32 * 5 * 15 * 15 * 3
    assert 2 * views < rollout_bytes(config) < 3 * views


def test_pettingzoo_step_refuses_missing_agents_and_non_integer_actions():
    pytest.importorskip("pettingzoo")
    from ssdinfluence.pettingzoo_env import HarvestParallelEnv

    env = HarvestParallelEnv(num_agents=2, horizon=10)
    env.reset(seed=0)
    state = env._env.get_state()
    for actions, message in (({"agent_0": 1}, "no action for agent(s) ['agent_1']"),
                             ({"agent_0": "1", "agent_1": 0}, "action of agent_0 must be an integer"),
                             ({"agent_0": 1.0, "agent_1": 0}, "must be an integer"),
                             ({"agent_0": 8, "agent_1": 0}, "in 0..7")):
        with pytest.raises(ValueError, match=re.escape(message)):
            env.step(actions)
    after = env._env.get_state()
    assert all(np.array_equal(state[k], after[k]) for k in state)  # refused steps moved nothing
    env.step({"agent_0": np.int64(1), "agent_1": np.array(2)})
