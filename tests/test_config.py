"""One declaration per Config field: the flags, ``build_config``, TOML files and sweeps all take
the same values from it, and ``merge`` layers defaults, preset, file and flags once for all."""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

from ssdinfluence.cli import main
from ssdinfluence.config import OPTIONS, PAPER_PRESETS, Config, build_config, load_toml, merge
from ssdinfluence.options import Option, option, option_of
from ssdinfluence.sweep import SweepSpec, expand

SMALL = {"env": "harvest", "agents": 2, "num_envs": 2, "rollout_length": 16, "bptt_length": 8, "ppo_minibatches": 2}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "200"})


def test_every_field_is_declared_with_its_option():
    for field in dataclasses.fields(Config):
        spec = option_of(field)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert spec.kind is type(default)
        if spec.kind is not dict:
            spec.check(field.name, default)
    assert Config().env_kwargs is not Config().env_kwargs  # a table default is not shared


def test_a_plain_field_names_what_it_lacks():
    @dataclasses.dataclass
    class Plain:
        x: int = 0

    with pytest.raises(LookupError, match="'x' is not declared with option"):
        option_of(dataclasses.fields(Plain)[0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"default": 1, "help": ""}, "needs help text"),
    ({"default": 0, "help": "Count.", "low": 1}, "default must be >= 1, got 0"),
    ({"default": "a", "help": "Pick.", "choices": ("b", "c")}, "unknown default 'a'"),
    ({"default": 1.0, "help": "Steps.", "steps": True}, "steps an int one"),
    ({"default": [1], "help": "List."}, "must be a bool, int, float, str or dict"),
])
def test_a_declaration_that_contradicts_itself_fails_at_once(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        option(**kwargs)


@pytest.mark.parametrize(("spec", "bounds", "shown"), [
    (Option("", int, low=1), ">= 1", "x>=1"),
    (Option("", float, low=0, low_open=True), "> 0", "x>0"),
    (Option("", float, low=0, low_open=True, high=1), "in (0, 1]", "0<x<=1"),
    (Option("", int, low=0, high=2**63 - 1), "in 0..2**63 - 1", "0<=x<=2**63 - 1"),
    (Option("", float, low=0, limit=1e4), ">= 0", "0<=x<=10000"),
])
def test_bounds_read_the_same_in_errors_and_help(spec, bounds, shown):
    assert spec.bounds_text() == bounds and spec.range_text() == shown


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("lr", "2", "lr must be in (0, 1], got 2.0"),
    ("gamma", "-0.5", "gamma must be in [0, 1], got -0.5"),
    ("value_coef", "1e5", "value_coef must be <= 10000, got 100000.0"),
    ("vocabulary", "1", "vocabulary must be >= 2, got 1"),
    ("max_grad_norm", "0", "max_grad_norm must be > 0, got 0.0"),
])
def test_a_flag_and_build_config_refuse_a_value_alike(flag, value, message, tmp_path):
    result = invoke("run", "--steps", "32", f"--{flag.replace('_', '-')}", value, "--out", tmp_path / "run")
    assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(ValueError, match=re.escape(message)):
        build_config({flag: float(value) if OPTIONS[flag].kind is float else int(value)})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["steps", "lr_anneal_steps", "influence_ramp_steps"])
def test_a_config_file_takes_step_counts_as_the_flags_do(field, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f"{field} = 3e7\n")
    config = build_config(merge(SMALL, load_toml(path)))
    assert getattr(config, field) == 30_000_000 and type(getattr(config, field)) is int
    path.write_text(f"{field} = 3.5e0\n")
    with pytest.raises(ValueError, match=re.escape(f"{field} must be an integer, got 3.5")):
        build_config(merge(SMALL, load_toml(path)))


def test_run_refuses_a_fractional_step_count_in_a_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("steps = 3.5\n")
    result = invoke("run", "--config", path, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2 and "steps must be an integer, got 3.5" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_merge_layers_defaults_preset_file_and_flags():
    from_file = {"env": "harvest", "model": "moa", "lr": 0.01, "env_kwargs": {"horizon": 50, "apple_reward": 2.0}}
    flags = {"lr": 0.02, "env_kwargs": {"horizon": 60}}
    values = merge(from_file, flags, preset="paper")
    paper = PAPER_PRESETS["harvest", "moa"]
    assert values["lr"] == 0.02  # flags over the file over the preset
    assert values["entropy_coef"] == paper["entropy_coef"]  # the preset of the file's env and model
    assert values["env_kwargs"] == {"horizon": 60, "apple_reward": 2.0}  # tables merge entry by entry
    assert "num_envs" not in values  # defaults stay Config's
    assert merge({"env": "snake"}, preset="paper") == {"env": "snake"}  # build_config names the env
    with pytest.raises(ValueError, match="unknown env 'snake'"):
        build_config(merge({"env": "snake"}, preset="paper"))


def test_a_sweep_trial_is_the_run_the_same_values_make():
    spec = SweepSpec.from_dict({"preset": "paper", "base": {"env": "harvest", "steps": 3.2e1, **{
        k: v for k, v in SMALL.items() if k != "env"}}, "grid": {"model": ["baseline", "moa"]}, "seeds": 1})
    for trial in expand(spec):
        values = merge({**spec.base, "model": trial.model, "seed": 0}, preset="paper")
        assert trial.values == values and type(trial.values["steps"]) is int
        assert build_config(trial.values) == build_config(values)



@pytest.mark.parametrize("arm", ["episodes", "episodes-ent01"])
def test_the_learn_cleanup_examples_are_the_configurations_their_committed_runs_trained(arm):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    example = build_config(load_toml(root / "examples" / "learn-cleanup" / f"{arm}.toml")).to_dict()
    saved = json.loads((root / "bench" / "results" / "learn-cleanup" / "search" / arm / "config.json").read_text())
    ignored = {"out", "threads"}  # where and on how many threads a run trains never changes it
    assert {k: v for k, v in example.items() if k not in ignored} == {k: v for k, v in saved.items() if k not in ignored}
