"""Sweeps: expansion of a spec into trials, the local backend end to end (a failing trial, an
interrupted and resumed sweep), the Ray backend on a local instance, the ``sweep`` command."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ssdinfluence.cli import main
from ssdinfluence.sweep import SweepSpec, expand, load_manifest, load_spec, run_sweep, trial_run_dirs
from ssdinfluence.sweep import driver as sweep_driver
from ssdinfluence.sweep.driver import reconcile

ROOT = Path(__file__).resolve().parents[1]
# 8 env steps per update: a trial of 32 steps is 4 updates (about 10 ms each)
TINY = {"env": "harvest", "agents": 2, "num_envs": 1, "rollout_length": 8, "bptt_length": 8, "ppo_minibatches": 1,
        "steps": 32, "log_trajectories": "", "env_kwargs": {"horizon": 20}}
TINY_TOML = """
[base]
env = "harvest"
agents = 2
num_envs = 1
rollout_length = 8
bptt_length = 8
ppo_minibatches = 1
log_trajectories = ""
env_kwargs = { horizon = 20 }
"""


def invoke(*args):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def saved_checkpoint(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)


# --- expansion ------------------------------------------------------------------------------

def test_grid_models_and_seeds_expand_to_stable_readable_ids():
    spec = SweepSpec.from_dict({"base": {"env": "harvest", "steps": 5e6, "lr_end": 0.0},
                                "models": ["baseline", "influence"],
                                "grid": {"lr": [1e-4, 3e-4], "num_envs": [16]}, "seeds": 2})
    trials = expand(spec)
    assert [t.id for t in trials] == [
        f"harvest-{model}-lr{lr}-s{seed}" for model in ("baseline", "influence") for lr in ("0.0001", "0.0003")
        for seed in (0, 1)]  # num_envs has one value: not in the ids
    first = trials[0]
    assert first.values == {"env": "harvest", "steps": 5_000_000, "lr_end": 0.0, "model": "baseline", "lr": 1e-4,
                            "num_envs": 16, "seed": 0}
    assert isinstance(first.values["steps"], int)  # TOML and JSON write 5e6 as a float
    assert (first.env, first.model, first.seed, first.steps, first.run_dir) == (
        "harvest", "baseline", 0, 5_000_000, "runs/harvest-baseline-lr0.0001-s0")
    assert [t.id for t in expand(SweepSpec.from_dict(spec.to_dict()))] == [t.id for t in trials]


def test_random_axes_are_deterministic_within_bounds_and_shared_by_grid_points():
    spec = SweepSpec.from_dict({
        "base": {"env": "harvest"}, "models": ["baseline", "visible"],
        "random": {"samples": 200, "rng_seed": 7, "entropy_coef": {"low": 1e-3, "high": 1e-2, "log": True},
                   "lr": {"low": 1e-3, "high": 2e-3}, "ppo_epochs": {"low": 1, "high": 3, "type": "int"},
                   "divergence": ["kl", "jsd"]}})
    trials = expand(spec)
    assert len(trials) == 400 and trials[0].id == "harvest-baseline-r0-s0"
    assert [t.values for t in expand(spec)] == [t.values for t in trials]
    baseline = [t.values for t in trials if t.model == "baseline"]
    assert [{k: v for k, v in x.items() if k != "model"} for x in baseline] == [
        {k: v for k, v in t.values.items() if k != "model"} for t in trials if t.model == "visible"]
    entropy = [x["entropy_coef"] for x in baseline]
    assert all(1e-3 <= e < 1e-2 for e in entropy)
    # log-uniform: half the draws below the geometric mean (a uniform draw would put 24% there)
    assert 0.4 < sum(e < math.sqrt(1e-3 * 1e-2) for e in entropy) / len(entropy) < 0.6
    assert all(1e-3 <= x["lr"] < 2e-3 for x in baseline)
    assert {x["ppo_epochs"] for x in baseline} == {1, 2, 3}  # both ends included
    assert {x["divergence"] for x in baseline} == {"kl", "jsd"}
    other = SweepSpec.from_dict({**spec.to_dict(), "random": {**spec.to_dict()["random"], "rng_seed": 8}})
    assert [t.values for t in expand(other)] != [t.values for t in trials]


def test_toml_file_with_preset_and_the_example(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('name = "paper"\npreset = "paper"\n[base]\nenv = "cleanup"\nsteps = 5e6\n'
                    '[grid]\nmodel = ["baseline", "influence", "moa"]\nlr = [1e-4, 3e-4]\n'
                    '[random]\nsamples = 4\nentropy_coef = { low = 1e-3, high = 1e-2, log = true }\n'
                    '[seeds]\ncount = 5\n')
    spec = load_spec(path)
    trials = expand(spec)
    assert spec.name == "paper" and len(trials) == 3 * 2 * 4 * 5
    assert len({t.id for t in trials}) == len(trials)
    assert trials[-1].id == "cleanup-moa-lr0.0003-r3-s4"
    influence = next(t for t in trials if t.model == "influence")
    assert influence.values["divergence"] == "jsd" and influence.values["influencee_reward"] is True  # the preset
    assert influence.values["lr"] == 1e-4  # the grid beats the preset
    example = expand(load_spec(ROOT / "examples" / "sweep.toml"))
    assert len(example) == 36 and all(t.steps == 1_000_000 for t in example)


@pytest.mark.parametrize(("name", "env", "models", "seeds", "steps", "ramp"), [
    ("study-harvest", "harvest", ("baseline", "influence", "moa"), 5, 10_000_000, 3_000_000),
    ("study-cleanup", "cleanup", ("baseline", "moa"), 3, 20_000_000, 6_000_000),
])
def test_the_study_expands_to_the_intended_trials(name, env, models, seeds, steps, ramp):
    from ssdinfluence.config import build_config, preset_values

    trials = expand(load_spec(ROOT / "examples" / f"{name}.toml"))
    assert [t.id for t in trials] == [f"{env}-{m}-s{s}" for m in models for s in range(seeds)]
    for trial in trials:
        config = build_config(trial.values)
        assert (config.env, config.agents, config.steps, config.log_trajectories) == (env, 5, steps, "")
        paper = preset_values("paper", env, trial.model)  # equal tuning effort: the paper's own values
        assert all(getattr(config, key) == value for key, value in paper.items() if key != "influence_ramp_steps")
        assert config.influence_ramp_steps == ramp  # the curriculum relative to the budget


@pytest.mark.parametrize(("spec", "message"), [
    ({"base": {"stepz": 3}}, "unknown option 'stepz'"),
    ({"base": {"env": "harvest"}, "models": ["baseline", "telepathy"]}, "trial harvest-telepathy-s0: unknown model"),
    ({"base": {"env": "harvest", "lr": "fast"}}, "trial harvest-baseline-s0: lr must be a number"),
    ({"base": {"env": "harvest", "agents": 2}, "grid": {"influencers": [1, 2]}, "models": ["influence"]},
     "trial harvest-influence-influencers2-s0: influencers must be between 1 and"),
    ({"base": {"seed": 3}}, "use the seeds axis"),
    ({"base": {"out": "x"}}, "sets each trial's run directory"),
    ({"base": {"threads": 2}}, "--threads-per-trial"),
    ({"base": {"lr": 0.1}, "grid": {"lr": [0.1, 0.2]}}, "'lr' is given in more than one"),
    ({"grid": {"lr": 0.1}}, "grid axis 'lr' must be a non-empty list"),
    ({"grid": {"lr": [0.1, 0.1]}}, "repeats a value"),
    ({"grid": {"lr": [0.1, 0.1000000001]}}, "get the same id"),
    ({"random": {"lr": {"low": 0.1, "high": 0.01}}}, "needs numbers low < high"),
    ({"random": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "a log range needs low > 0"),
    ({"random": {"lr": {"low": 0.1, "high": 0.2, "scale": "log"}}}, "unknown keys ['scale']"),
    ({"random": {"samples": 0, "lr": [0.1]}}, "samples must be an integer >= 1"),
    ({"seeds": 0}, "seeds count must be >= 1"),
    ({"seeds": [1, 1]}, "seeds must be a count >= 1 or a list of distinct"),
    ({"seeds": {"count": 2, "values": [0]}}, "[seeds] takes one of"),
    ({"models": ["baseline"], "grid": {"model": ["moa"]}}, "either as models = [...] or in [grid]"),
    ({"bas": {}}, "unknown sweep keys ['bas']"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError) as error:
        expand(SweepSpec.from_dict(spec))
    assert message in str(error.value)


def test_unreadable_sweep_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_spec(bad)
    with pytest.raises(ValueError, match="cannot read sweep file"):
        load_spec(tmp_path / "missing.toml")


def test_sweep_module_imports_without_ray():
    code = "import sys, ssdinfluence.sweep, ssdinfluence.cli; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- local backend --------------------------------------------------------------------------

def test_local_sweep_runs_trials_records_a_failure_and_reruns_only_what_is_left(tmp_path):
    sweep_dir = tmp_path / "sweep"
    spec = SweepSpec.from_dict({"name": "t", "base": TINY, "models": ["baseline", "visible"], "seeds": 2})
    blocked = sweep_dir / "runs" / "harvest-visible-s1"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run directory should be")  # the trainer cannot create its run dir
    seen = []
    records = run_sweep(sweep_dir, spec, workers=2, on_progress=lambda rs: seen.append([r["status"] for r in rs]))

    assert [r["status"] for r in records] == ["finished", "finished", "finished", "failed"]
    assert seen[-1] == ["finished", "finished", "finished", "failed"]  # progress reaches the caller
    assert records == load_manifest(sweep_dir)
    assert json.loads((sweep_dir / "sweep.json").read_text()) == spec.to_dict()
    failed = records[3]
    assert failed["attempts"] == 1 and "FileExistsError" in failed["error"] and failed["env_steps"] == 0
    cores = len(os.sched_getaffinity(0))
    for record, run_dir in zip(records[:3], trial_run_dirs(sweep_dir), strict=True):
        assert run_dir == sweep_dir.resolve() / record["run_dir"]
        assert saved_checkpoint(run_dir)["env_steps"] == 32 and saved_checkpoint(run_dir)["update"] == 4
        assert [int(r["update"]) for r in read_rows(run_dir / "metrics.csv")] == [1, 2, 3, 4]
        assert json.loads((run_dir / "config.json").read_text())["threads"] == max(1, cores // 2)
        assert record["env_steps"] == 32 and record["attempts"] == 1 and record["error"] is None
        assert record["started"] <= record["ended"] and record["duration_s"] > 0

    blocked.unlink()
    mtimes = {p: (p / "checkpoint.pt").stat().st_mtime_ns for p in trial_run_dirs(sweep_dir)}
    records = run_sweep(sweep_dir, spec, workers=2)
    assert all(r["status"] == "finished" for r in records)
    assert [r["attempts"] for r in records] == [1, 1, 1, 2] and records[3]["error"] is None
    assert {p: (p / "checkpoint.pt").stat().st_mtime_ns for p in mtimes} == mtimes  # finished ones untouched

    report = invoke("report", str(sweep_dir), "--json", "--no-plot")  # the finished sweep, compared
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)["comparison"]
    assert [(row["label"], row["seeds"]) for row in rows] == [("baseline", [0, 1]), ("visible", [0, 1])]

    manifest = (sweep_dir / "manifest.json").read_text()
    assert run_sweep(sweep_dir, spec) == records  # nothing left: nothing runs
    assert json.loads((sweep_dir / "manifest.json").read_text())["trials"] == json.loads(manifest)["trials"]

    with pytest.raises(ValueError, match="holds a different sweep"):
        run_sweep(sweep_dir, SweepSpec.from_dict({**spec.to_dict(), "seeds": 3}))
    with open(sweep_dir / "sweep.lock", "w") as handle:  # as a driver running elsewhere holds it
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another sweep is running"):
            run_sweep(sweep_dir, spec)


def test_sweep_runs_seed_major_and_a_finished_trial_needs_only_its_metrics(tmp_path):
    spec = SweepSpec.from_dict({"base": TINY, "models": ["baseline", "visible"], "seeds": 2})
    sweep_dir = tmp_path / "sweep"
    started = []  # one worker: trials leave pending one at a time

    def note_starts(records):
        started.extend(r["id"] for r in records if r["status"] != "pending" and r["id"] not in started)

    records = run_sweep(sweep_dir, spec, workers=1, threads_per_trial=1, on_progress=note_starts)
    # every model at seed 0 before any at seed 1: a sweep stopped part-way compares equal seeds
    assert started == ["harvest-baseline-s0", "harvest-visible-s0", "harvest-baseline-s1", "harvest-visible-s1"]

    # a study committed without checkpoints stays finished; a removed run directory runs again
    first, second = (sweep_dir / r["run_dir"] for r in records[:2])
    (first / "checkpoint.pt").unlink()
    metrics = (first / "metrics.csv").read_text()
    shutil.rmtree(second)
    records = run_sweep(sweep_dir, spec, workers=1, threads_per_trial=1)
    assert [r["attempts"] for r in records] == [1, 2, 1, 1]  # expansion order: baseline s0, s1, visible s0, s1
    assert not (first / "checkpoint.pt").exists() and (first / "metrics.csv").read_text() == metrics
    assert saved_checkpoint(second)["env_steps"] == 32

    # a resumed trial reports the progress it goes on from: its checkpoint's, or none without one
    records = load_manifest(sweep_dir)
    for r in records[:2]:
        r.update(status="interrupted", env_steps=12345)
    shutil.rmtree(first)
    reconcile(sweep_dir, records)
    assert [r["env_steps"] for r in records[:2]] == [0, 32]


def test_a_finished_trial_stored_gzipped_stays_finished_and_reads_the_same(tmp_path):
    """The study's committed runs keep metrics.csv.gz (2.3 MB as text): a resumed sweep leaves
    such a trial finished, and load_run, the manifest's progress and report read it as the csv."""
    import numpy as np

    from ssdinfluence.analysis import load_run
    from ssdinfluence.sweep.manifest import record_progress

    spec = SweepSpec.from_dict({"base": TINY, "models": ["baseline"], "seeds": 1})
    sweep_dir = tmp_path / "sweep"
    records = run_sweep(sweep_dir, spec, workers=1, threads_per_trial=1)
    run_dir = sweep_dir / records[0]["run_dir"]
    plain = load_run(run_dir).metrics
    report = invoke("report", str(sweep_dir), "--json", "--no-plot")
    text = run_dir / "metrics.csv"
    (run_dir / "metrics.csv.gz").write_bytes(gzip.compress(text.read_bytes()))
    text.unlink()
    packed = load_run(run_dir).metrics
    assert list(packed) == list(plain)
    assert all(np.array_equal(packed[k], plain[k], equal_nan=True) for k in plain)
    assert [r["attempts"] for r in run_sweep(sweep_dir, spec, workers=1, threads_per_trial=1)] == [1]
    assert not text.exists()
    record = {**records[0], "env_steps": 0, "collective_return": None}
    assert record_progress(record, run_dir, running=False) and record["env_steps"] == 32
    again = invoke("report", str(sweep_dir), "--json", "--no-plot")
    assert report.exit_code == again.exit_code == 0 and again.output == report.output


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    # Two short trials finish first (2 workers); the two long ones (500 updates) get a Ctrl-C.
    (tmp_path / "sweep.toml").write_text('name = "stop"\n' + TINY_TOML + "[grid]\nsteps = [32, 4000]\n[seeds]\ncount = 2\n")
    sweep_dir = tmp_path / "sweeps" / "stop"
    short = [sweep_dir / "runs" / f"harvest-baseline-steps32-s{s}" for s in (0, 1)]
    long = [sweep_dir / "runs" / f"harvest-baseline-steps4000-s{s}" for s in (0, 1)]
    process = subprocess.Popen([sys.executable, "-m", "ssdinfluence.cli", "sweep", "--config", "sweep.toml",
                                "--workers", "2", "--threads-per-trial", "1"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if all((d / "metrics.csv").exists() and len((d / "metrics.csv").read_text().splitlines()) > 3 for d in long):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "2 finished, 2 interrupted" in output and "ssdinfluence sweep --resume sweeps/stop" in output
    assert "harvest-baseline-steps4000-s1: running" in output  # the progress lines

    records = load_manifest(sweep_dir)
    assert [r["status"] for r in records] == ["finished", "finished", "interrupted", "interrupted"]
    before = {}
    for record, run_dir in zip(records[2:], long, strict=True):
        saved = saved_checkpoint(run_dir)
        rows = read_rows(run_dir / "metrics.csv")
        assert 0 < saved["env_steps"] == record["env_steps"] < 4000
        assert int(rows[-1]["update"]) == saved["update"]  # stopped after an update, with its checkpoint
        before[run_dir] = rows
    mtimes = [(d / "checkpoint.pt").stat().st_mtime_ns for d in short]

    result = CliRunner().invoke(main, ["sweep", "--resume", str(sweep_dir), "--workers", "2",
                                       "--threads-per-trial", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "4 finished" in result.output
    records = load_manifest(sweep_dir)
    assert [r["attempts"] for r in records] == [1, 1, 2, 2]
    assert [(d / "checkpoint.pt").stat().st_mtime_ns for d in short] == mtimes  # skipped
    for run_dir in long:
        rows = read_rows(run_dir / "metrics.csv")
        assert [int(r["update"]) for r in rows] == list(range(1, 501))
        assert rows[:len(before[run_dir])] == before[run_dir]  # continued, not restarted
        assert saved_checkpoint(run_dir)["env_steps"] == 4000


def pool_workers(pid: int) -> list[int]:
    """The pids of process ``pid``'s spawned pool workers (from /proc: Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """False once ``pid`` has exited (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker process in /proc")
def test_a_killed_driver_leaves_no_worker_and_the_sweep_resumes_at_once(tmp_path):
    (tmp_path / "sweep.toml").write_text('name = "kill"\n' + TINY_TOML)
    sweep_dir = tmp_path / "sweeps" / "kill"
    run_dir = sweep_dir / "runs" / "harvest-baseline-s0"
    driver = subprocess.Popen([sys.executable, "-m", "ssdinfluence.cli", "sweep", "--config", "sweep.toml",
                               "--steps", "1000", "--workers", "1", "--threads-per-trial", "1", "--quiet"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (run_dir / "metrics.csv").exists() and len((run_dir / "metrics.csv").read_text().splitlines()) > 3:
                break
            time.sleep(0.05)
        workers = pool_workers(driver.pid)
    finally:
        driver.kill()
        driver.wait()
    assert len(workers) == 1
    deadline = time.time() + 5
    while alive(workers[0]) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(workers[0]), "the worker outlived its driver"
    updates = [int(r["update"]) for r in read_rows(run_dir / "metrics.csv")]
    assert updates[-1] == saved_checkpoint(run_dir)["update"] < 125  # it stopped after an update, checkpointed

    result = invoke("sweep", "--resume", str(sweep_dir), "--workers", "1", "--threads-per-trial", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 finished" in result.output
    assert [int(r["update"]) for r in read_rows(run_dir / "metrics.csv")] == list(range(1, 126))


def hold_lock(run_dir: Path, seconds: float | None):
    """Hold ``run_dir``'s lock as a trainer in another process does (an OS lock on its own open
    file); released after ``seconds`` (None: when the returned file is closed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    if seconds is not None:
        threading.Timer(seconds, handle.close).start()
    return handle


def test_a_sweep_waits_for_a_trial_still_training_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY_TOML)
    run_dir = tmp_path / "sweeps" / "held" / "runs" / "harvest-baseline-s0"
    hold_lock(run_dir, 1.0)
    args = ["sweep", "--config", "s.toml", "--steps", "16", "--workers", "1", "--threads-per-trial", "1", "--quiet"]
    result = invoke(*args, "--name", "held")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "waiting up to 120 s for 1 trial(s) still training in another process" in text and str(run_dir) in text
    assert "1 finished" in text

    monkeypatch.setattr(sweep_driver, "OLD_TRIALS_WAIT_S", 0.5)
    run_dir = tmp_path / "sweeps" / "stuck" / "runs" / "harvest-baseline-s0"
    with hold_lock(run_dir, None):
        result = invoke(*args, "--name", "stuck")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    text = " ".join(result.output.split())
    assert "1 trial(s) still training in another process after 0 s" in text and str(run_dir) in text
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing ran


def test_a_trial_takes_its_run_directory_lock_before_its_tracker_writes_there(tmp_path):
    """A trial (new or resumed) holds its run directory's lock like any run, apart from the
    driver's sweep.lock: held by another trainer, the trial fails naming it and its tracker
    wrote nothing; once free, the trial resumes."""
    pytest.importorskip("tensorboard")
    from ssdinfluence.rundir import locked
    from ssdinfluence.sweep.backends import run_trial

    run_dir = tmp_path / "trial"
    track = {"kind": "tensorboard", "project": "ssdinfluence"}
    assert run_trial(str(run_dir), {**TINY, "steps": 16}, threads=1)["status"] == "finished"
    with locked(run_dir):
        outcome = run_trial(str(run_dir), TINY, threads=1, track=track)
    assert outcome["status"] == "failed" and "another process is training in this run directory" in outcome["error"]
    assert not (run_dir / "tensorboard").exists()
    outcome = run_trial(str(run_dir), TINY, threads=1, track=track)
    assert outcome["status"] == "finished" and outcome["env_steps"] == 32
    assert [int(r["update"]) for r in read_rows(run_dir / "metrics.csv")] == [1, 2, 3, 4]  # resumed at 2
    assert (run_dir / "tensorboard").is_dir()


# --- Ray backend ----------------------------------------------------------------------------

def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = SweepSpec.from_dict({"base": TINY, "models": ["baseline"], "seeds": 2})
        records = run_sweep(tmp_path / "sweep", spec, backend="ray", cpus_per_trial=1)
        assert ray.is_initialized()  # a Ray the caller started is left to the caller
    finally:
        ray.shutdown()
    assert [r["status"] for r in records] == ["finished", "finished"]
    for run_dir in trial_run_dirs(tmp_path / "sweep"):
        assert saved_checkpoint(run_dir)["env_steps"] == 32
        assert json.loads((run_dir / "config.json").read_text())["threads"] == 1  # its CPUs


# --- the sweep command ----------------------------------------------------------------------

def test_dry_run_lists_trials_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("sweep", "--env", "harvest", "--models", "baseline,moa", "--seeds", "2", "--steps", "5e6",
                    "--set", "lr=3e-4", "--set", "env_kwargs.horizon=100", "--set", "reward_transform=prosocial",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4 trials in sweeps/harvest" in result.output
    for trial in ("harvest-baseline-s0", "harvest-baseline-s1", "harvest-moa-s0", "harvest-moa-s1"):
        assert trial in result.output
    assert "0/5,000,000" in result.output
    assert not (tmp_path / "sweeps").exists()


def test_flags_override_the_sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('name = "f"\n[base]\nenv = "cleanup"\nmodel = "moa"\n[grid]\nlr = [0.1, 0.2]\n')
    result = invoke("sweep", "--config", "s.toml", "--models", "baseline", "--set", "lr=0.3", "--seeds", "3",
                    "--out", "elsewhere", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 trials in elsewhere" in result.output and "cleanup-baseline-s2" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "baseline,telepathy"], "unknown model(s) ['telepathy']"),
    (["--set", "stepz=3"], "unknown option 'stepz'"),
    (["--set", "lr"], "'lr' is not KEY=VALUE"),
    (["--set", "seed=3"], "use the seeds axis"),
    (["--env", "snake"], "'snake' is not one of"),
    (["--steps", "lots"], "is not a number of steps"),
    (["--config", "missing.toml"], "cannot read sweep file"),
    (["--resume", "nowhere"], "nowhere is not a sweep directory"),
    (["--resume", "nowhere", "--models", "moa"], "cannot give --models with --resume"),
    (["--gpus-per-trial", "-1"], "-1"),
])
def test_bad_options_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a test that wrongly passed validation would train here
    result = invoke("sweep", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_failed_trial_gives_exit_status_1_and_its_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('name = "fail"\n' + TINY_TOML)
    (tmp_path / "sweeps" / "fail" / "runs").mkdir(parents=True)
    (tmp_path / "sweeps" / "fail" / "runs" / "harvest-baseline-s0").write_text("not a directory")
    result = invoke("sweep", "--config", "s.toml", "--steps", "32", "--quiet")
    assert result.exit_code == 1, result.output
    assert "1 failed; sweep directory sweeps/fail" in result.output
    assert "harvest-baseline-s0 failed: FileExistsError" in result.output
    assert "ssdinfluence sweep --resume sweeps/fail" in result.output


def test_unknown_option_in_sweep_file_and_missing_ray_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text("[grid]\nlearning_rate = [0.1, 0.2]\n")
    result = invoke("sweep", "--config", "s.toml")
    assert result.exit_code == 2 and "unknown option 'learning_rate'" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when Ray is not installed
    result = invoke("sweep", "--backend", "ray", "--dry-run")
    assert result.exit_code == 2 and 'pip install "ssdinfluence[ray]"' in result.output


def test_a_trial_carried_in_a_repository_finishes_in_a_fresh_clone_with_no_step_repeated_or_lost(tmp_path):
    """``pack`` the interrupted trial, copy only what a repository keeps (configs, manifest and
    the ``.gz`` files) to a new directory, and ``sweep --resume`` there: the trial ends as an
    uninterrupted one, its packed checkpoint is gone and its packed metrics are the whole run's."""
    from ssdinfluence.config import build_config
    from ssdinfluence.sweep.manifest import Manifest, plan, write_json
    from ssdinfluence.train import train

    spec = SweepSpec.from_dict({"base": {**TINY, "steps": 96, "checkpoint_every": 1}, "models": ["baseline"],
                                "seeds": 1})
    (trial,) = expand(spec)
    config = build_config({**trial.values, "threads": 1})
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(dataclasses.replace(config, out=str(straight)))
    # the same sweep, its trial stopped after 5 of 12 updates
    train(dataclasses.replace(config, out=str(stopped / trial.run_dir)), max_updates=5)
    Manifest(stopped, [{**r, "status": "interrupted", "env_steps": 40} for r in plan(stopped, [trial])]).save()
    write_json(stopped / "sweep.json", spec.to_dict())
    result = invoke("pack", str(stopped))
    assert result.exit_code == 0 and "unfinished, metrics.csv.gz, checkpoint.pt.gz" in result.output, result.output

    clone = tmp_path / "clone"
    kept = [p for p in stopped.rglob("*") if p.is_file() and (p.suffix in (".json", ".gz"))]
    for path in kept:
        (clone / path.relative_to(stopped)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, clone / path.relative_to(stopped))
    result = invoke("sweep", "--resume", str(clone), "--workers", "1", "--threads-per-trial", "1", "--quiet")
    assert result.exit_code == 0 and "1 finished" in result.output, result.output

    timing = {"time_s", "sps", "env_s", "forward_s", "backward_s", "logging_s"}

    def rows(path):
        return [{k: v for k, v in r.items() if k not in timing} for r in read_rows(path)]

    run_dir = clone / trial.run_dir
    assert rows(run_dir / "metrics.csv") == rows(straight / "metrics.csv")  # updates 1..12, each once
    # updates 1..5 were carried, not trained again: their rows keep the first sitting's timings
    assert read_rows(run_dir / "metrics.csv")[:5] == read_rows(stopped / trial.run_dir / "metrics.csv")
    assert gzip.decompress((run_dir / "metrics.csv.gz").read_bytes()) == (run_dir / "metrics.csv").read_bytes()
    assert not (run_dir / "checkpoint.pt.gz").exists()
    done, expected = saved_checkpoint(run_dir), saved_checkpoint(straight)
    assert done["env_steps"] == 96 and all(torch.equal(done["model"][k], v) for k, v in expected["model"].items())


def test_pack_carries_at_most_one_unfinished_trial_of_a_sweep(tmp_path):
    from ssdinfluence.config import build_config
    from ssdinfluence.sweep.manifest import Manifest, plan
    from ssdinfluence.train import train

    spec = SweepSpec.from_dict({"base": {**TINY, "steps": 96}, "models": ["baseline"], "seeds": 2})
    sweep_dir = tmp_path / "sweep"
    records = [{**r, "status": "interrupted"} for r in plan(sweep_dir, expand(spec))]
    for trial in expand(spec):  # both trials stopped part-way, each with a checkpoint
        train(build_config({**trial.values, "out": str(sweep_dir / trial.run_dir), "threads": 1}), max_updates=2)
    Manifest(sweep_dir, records).save()
    result = invoke("pack", str(sweep_dir))
    assert result.exit_code == 2 and "2 unfinished trials have checkpoints" in result.output, result.output
    assert not list(sweep_dir.rglob("*.gz"))
