"""Analysis of saved runs: analyze, compare, learning curves, plots, and their commands."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from ssdinfluence import analysis
from ssdinfluence.cli import main
from ssdinfluence.config import build_config
from ssdinfluence.metrics import speaker_consistency
from ssdinfluence.train import metric_columns, train
from ssdinfluence.trajectories import TrajectoryReader, TrajectoryWriter


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Real tiny runs: baseline and comm, seeds 0 and 1, every episode of both envs logged."""
    root = tmp_path_factory.mktemp("runs")
    for model in ("baseline", "comm"):
        for seed in (0, 1):
            train(build_config({
                "env": "harvest", "agents": 2, "model": model, "num_envs": 2, "rollout_length": 16,
                "bptt_length": 8, "ppo_minibatches": 2, "ppo_epochs": 1, "steps": 4 * 32, "seed": seed,
                "out": str(root / f"{model}-s{seed}"), "log_trajectories": "0,1", "log_every": 1,
                "env_kwargs": {"horizon": 20}}))
    return root


def fake_run(path, finals, agent_finals=None, seed=0, steps=(100, 200, 300, 400, 500, 600, 700, 800, 900, 1000),
             **config):
    """A run directory with a real config and a metrics.csv (one row per step in ``steps``) whose
    collective return is ``finals`` in the last ``len(finals)`` rows and 0 before."""
    values = {"env": "harvest", "agents": 2, "seed": seed, "out": str(path), **config}
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(build_config(values).to_dict()))
    columns = metric_columns(2, values.get("model", "baseline"), values["env"])
    finals = list(finals)
    with open(path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for i, step in enumerate(steps):
            late = i >= len(steps) - len(finals)
            value = finals[i - (len(steps) - len(finals))] if late else 0.0
            row = {name: 1.0 for name in columns}
            row.update(update=i + 1, env_steps=step, collective_return=value)
            for k, agent in enumerate(agent_finals or [value / 2, value / 2]):
                row[f"return_agent_{k}"] = agent if late else 0.0
            writer.writerow(row)
    return path


# ---------------------------------------------------------------------------- analyze


def test_analyze_log_uses_the_last_episodes(trained):
    with TrajectoryReader(trained / "comm-s0" / "trajectories.h5") as reader:
        index = reader.episodes()
        assert reader.num_episodes >= 4
        out = analysis.analyze_log(reader, last=3)
        steps = [reader.episode(k) for k in range(reader.num_episodes - 3, reader.num_episodes)]
    assert out["episodes"] == 3
    assert out["collective_return"]["mean"] == pytest.approx(index["returns"][-3:].sum(1).mean())
    np.testing.assert_allclose(out["returns_per_agent"], index["returns"][-3:].mean(0), rtol=1e-6)
    assert out["efficiency"]["mean"] == pytest.approx(index["efficiency"][-3:].mean())
    messages = np.concatenate([s["messages"] for s in steps])
    actions = np.concatenate([s["actions"] for s in steps])
    expected = speaker_consistency(messages, actions, 9, 8)
    np.testing.assert_allclose(out["speaker_consistency"]["per_agent"], expected)
    influence = np.concatenate([s["influence"] for s in steps])
    np.testing.assert_allclose(out["influence"]["mean_per_agent"], influence.mean(0), rtol=1e-6)
    for kind in ("symbol_action", "action_action"):
        best = out["coordination"][kind]["overall"]
        assert best["max"] >= 0 and best["pair"][0] != best["pair"][1]


def test_analyze_run_of_a_baseline_has_no_influence_or_messages(trained):
    out = analysis.analyze_run(trained / "baseline-s1", last=2)
    assert (out["model"], out["seed"], out["env_steps"]) == ("baseline", 1, 128)
    assert out["log"]["influence"] is None and out["log"]["speaker_consistency"] is None
    assert out["log"]["coordination"]["symbol_action"] is None
    assert out["log"]["coordination"]["action_action"]["moments"]["max"] is None  # moments need influence
    json.dumps(out, allow_nan=False)  # JSON-ready: no NaN anywhere


def test_analyze_log_of_an_empty_log_is_a_clear_error(tmp_path):
    TrajectoryWriter(tmp_path / "t.h5", env_name="harvest", num_agents=2, num_actions=8,
                     map_text="@@@\n@P@\n@@@", palette=np.zeros((10, 3), np.uint8)).close()
    with TrajectoryReader(tmp_path / "t.h5") as reader, pytest.raises(analysis.RunError, match="no complete episode"):
        analysis.analyze_log(reader)


# ---------------------------------------------------------------------------- compare


def test_confidence_interval_hand_computed():
    mean, half, n = analysis.confidence_interval([10.0, 20.0, np.nan])
    assert (mean, n) == (15.0, 2)
    assert half == pytest.approx(12.706 * np.std([10, 20], ddof=1) / math.sqrt(2))
    assert analysis.confidence_interval([3.0])[:2] == (3.0, pytest.approx(float("nan"), nan_ok=True))
    assert analysis.confidence_interval([])[2] == 0


def test_compare_runs_groups_seeds_and_reports_the_paper(tmp_path):
    runs = [fake_run(tmp_path / "a", [8.0, 12.0], seed=0),  # final = mean of the last 10% rows
            fake_run(tmp_path / "b", [20.0], seed=1),
            fake_run(tmp_path / "c", [5.0], seed=0, model="influence", lr=1e-3),
            fake_run(tmp_path / "d", [7.0], seed=0, model="influence", lr=3e-4)]
    rows = analysis.compare_runs(runs, window=0.15)  # the last 2 of 10 rows (steps >= 850)
    by_label = {row["label"]: row for row in rows}
    assert set(by_label) == {"baseline", "influence lr=0.001", "influence lr=0.0003"}
    base = by_label["baseline"]
    assert base["seeds"] == [0, 1] and base["paper"] == 485
    assert base["collective_return"]["values"] == [10.0, 10.0]  # a: mean(8, 12); b: mean(0, 20)
    assert base["collective_return"]["ci"] == 0.0
    assert by_label["influence lr=0.001"]["paper"] == 1073
    assert by_label["influence lr=0.001"]["collective_return"]["mean"] == pytest.approx(2.5)


def test_a_setting_missing_from_an_older_config_counts_as_its_default(tmp_path):
    old = fake_run(tmp_path / "old", [10.0], seed=0)
    config = json.loads((old / "config.json").read_text())
    del config["target_kl"]  # written before target_kl existed
    (old / "config.json").write_text(json.dumps(config))
    runs = [old, fake_run(tmp_path / "new", [20.0], seed=1), fake_run(tmp_path / "kl", [5.0], seed=0, target_kl=0.02)]
    rows = {row["label"]: row for row in analysis.compare_runs(runs, window=0.05)}
    assert set(rows) == {"baseline target_kl=0.0", "baseline target_kl=0.02"}
    assert rows["baseline target_kl=0.0"]["seeds"] == [0, 1]


def test_compare_runs_drops_seeds_where_an_agent_never_learned(tmp_path):
    runs = [fake_run(tmp_path / "a", [10.0], agent_finals=[5.0, 5.0], seed=0),
            fake_run(tmp_path / "b", [30.0], agent_finals=[30.0, 0.0], seed=1)]
    kept = analysis.compare_runs(runs, window=0.05, drop_nonlearning=True)[0]  # the last row
    assert kept["seeds"] == [0] and kept["dropped"] == [1]
    assert kept["collective_return"]["mean"] == 10.0
    assert analysis.compare_runs(runs, window=0.05)[0]["collective_return"]["mean"] == 20.0


def test_final_value_falls_back_to_the_last_update_that_ended_episodes(tmp_path):
    nan = float("nan")
    run = analysis.Run(tmp_path, {}, {"env_steps": np.array([10.0, 20.0, 30.0, 40.0]),
                                      "collective_return": np.array([nan, 5.0, 7.0, nan]),
                                      "peace": np.full(4, nan)})
    assert run.final("collective_return", window=0.1) == 7.0  # nothing ended in [36, 40]
    assert run.final("collective_return", window=0.5) == 6.0  # steps 20..40: mean of 5 and 7
    assert np.isnan(run.final("peace"))


def test_inequity_aversion_is_compared_with_its_own_paper_row(tmp_path):
    row = analysis.compare_runs([fake_run(tmp_path / "a", [1.0], env="cleanup", reward_transform="inequity")])[0]
    assert (row["label"], row["paper"]) == ("baseline+inequity", 275)


def test_learning_curves_mean_and_band_across_seeds(tmp_path):
    steps = (100, 200, 300, 400)
    a = fake_run(tmp_path / "a", [1.0, 2.0, 3.0, 4.0], seed=0, steps=steps)
    b = fake_run(tmp_path / "b", [3.0, 4.0, 5.0, 6.0], seed=1, steps=steps)
    (curve,) = analysis.learning_curves([a, b], smooth=1, points=4)
    np.testing.assert_allclose(curve["steps"], steps)
    np.testing.assert_allclose(curve["mean"], [2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(curve["high"] - curve["mean"], 12.706 * math.sqrt(2) / math.sqrt(2))
    (smoothed,) = analysis.learning_curves([a], smooth=2, points=4)
    np.testing.assert_allclose(smoothed["mean"], [1.0, 1.5, 2.5, 3.5])  # trailing mean of 2 updates
    np.testing.assert_allclose(smoothed["low"], smoothed["mean"])  # one seed: no band


def test_plot_curves_writes_an_image(trained, tmp_path):
    import matplotlib.image

    path = analysis.plot_curves(analysis.find_runs([trained]), tmp_path / "curves.png", smooth=2)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("reference", [True, False])
def test_plot_marks_the_reference_ppo_curve_up_to_the_runs_last_step(tmp_path, monkeypatch, reference):
    from matplotlib.axes import Axes

    fake_run(tmp_path / "run", [50.0], env="cleanup", steps=tuple(range(3_000_000, 33_000_000, 3_000_000)))
    drawn = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, *args, **kwargs: drawn.append((args, kwargs)) or plot(ax, *args, **kwargs))
    limits, set_ylim = [], Axes.set_ylim

    def record_ylim(ax, *args, **kwargs):
        if "bottom" in kwargs:
            limits.append(kwargs)
        return set_ylim(ax, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_ylim", record_ylim)
    analysis.plot_curves([tmp_path / "run"], tmp_path / "curves.png", smooth=1, reference=reference, ymin=-50)
    marked = [args for args, kwargs in drawn if kwargs.get("label") == "reference PPO, baseline"]
    assert marked == ([((1e7, 2e7, 3e7), (10, 36, 80))] if reference else [])
    assert limits == [{"bottom": -50}]


def test_plot_without_matplotlib_says_how_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"ssdinfluence\[viz\]"):
        analysis.plot_curves([trained / "comm-s0"], tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_analysis_imports_neither_torch_nor_matplotlib():
    code = ("import sys, ssdinfluence.analysis; "
            "bad = [m for m in ('torch', 'matplotlib', 'click') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- commands


def test_analyze_compare_and_plot_commands(trained, tmp_path):
    result = invoke("analyze", trained / "comm-s0", "--last", "2")
    assert result.exit_code == 0, result.output
    for text in ("collective return", "speaker consistency", "symbol / action", "influence of agent k"):
        assert text in result.output
    result = invoke("analyze", fake_run(tmp_path / "unlogged", [1.0]))
    assert result.exit_code == 0 and "no logged episode" in result.output
    result = invoke("analyze", trained, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(r["model"] for r in json.loads(result.output)) == ["baseline", "baseline", "comm", "comm"]
    result = invoke("compare", trained)
    assert result.exit_code == 0, result.output
    assert "0,1" in result.output and "951" in result.output  # both seeds; the paper's Harvest comm value
    rows = json.loads(invoke("compare", trained, "--json").output)
    assert [row["label"] for row in rows] == ["baseline", "comm"]
    result = invoke("plot", trained, "-o", tmp_path / "curves.png", "--metric", "efficiency", "--smooth", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_commands_reject_missing_and_empty_runs(tmp_path, command):
    result = invoke(command, tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke(command, tmp_path / "empty")
    assert result.exit_code == 2 and "no run found" in result.output
    run = fake_run(tmp_path / "fresh", [1.0])
    (run / "metrics.csv").write_text("update,env_steps,collective_return\n")
    result = invoke(command, run)
    assert result.exit_code == 2 and "no metrics yet" in result.output
    (run / "config.json").write_text("{not json")
    result = invoke(command, run)
    assert result.exit_code == 2 and "unreadable" in result.output


def test_plot_rejects_unknown_metric_and_format(tmp_path):
    run = fake_run(tmp_path / "a", [1.0])
    result = invoke("plot", run, "-o", tmp_path / "c.png", "--metric", "happiness")
    assert result.exit_code == 2 and "'happiness' is not a column" in result.output
    result = invoke("plot", run, "-o", tmp_path / "c.txt")
    assert result.exit_code == 2 and ".png, .pdf or .svg" in result.output


def fake_sweep(root):
    """A sweep directory whose manifest lists two finished seeds, an interrupted and a failed trial."""
    from ssdinfluence.sweep import MANIFEST_FORMAT

    trials = [("baseline-s0", "finished", [10.0], 0), ("baseline-s1", "finished", [20.0], 1),
              ("baseline-s2", "interrupted", [90.0], 2), ("baseline-s3", "failed", None, 3)]
    records = []
    for trial_id, status, finals, seed in trials:
        if finals:
            fake_run(root / "runs" / trial_id, finals, seed=seed)
        records.append({"id": trial_id, "run_dir": f"runs/{trial_id}", "env": "harvest", "model": "baseline",
                        "seed": seed, "status": status,
                        "error": "Traceback ...\nRuntimeError: out of memory" if status == "failed" else None})
    (root / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "version": 1, "trials": records}))
    return root


def test_report_compares_finished_trials_and_plots(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep")
    result = invoke("report", sweep, "--window", "0.05")
    assert result.exit_code == 0, result.output
    assert "4 trials: 1 failed, 2 finished, 1 interrupted" in result.output
    assert "failed baseline-s3: RuntimeError: out of memory" in result.output
    assert "0,1" in result.output and "485" in result.output  # the finished seeds; the paper's value
    assert (sweep / "curves.png").stat().st_size > 0
    (row,) = json.loads(invoke("report", sweep, "--window", "0.05", "--json", "--no-plot").output)["comparison"]
    assert row["seeds"] == [0, 1] and row["collective_return"]["mean"] == 15.0
    (row,) = json.loads(invoke("report", sweep, "--window", "0.05", "--json", "--no-plot",
                               "--unfinished").output)["comparison"]
    assert row["seeds"] == [0, 1, 2] and row["collective_return"]["mean"] == 40.0


def test_report_rejects_what_is_not_a_finished_sweep(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and "not a sweep directory" in result.output
    sweep = fake_sweep(tmp_path / "sweep")
    manifest = json.loads((sweep / "manifest.json").read_text())
    for record in manifest["trials"]:
        record["status"] = "pending"
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("report", sweep)
    assert result.exit_code == 2 and "no finished trial has metrics yet (4 pending)" in result.output
