"""Promises of the project itself: the README's set-up commands, import hygiene, the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssdinfluence.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_setup_commands():
    """The README's first two code blocks: install-and-run, install-and-test."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_exactly_the_readme_test_command():
    run_command, test_command = readme_setup_commands()
    assert "ssdinfluence run --env cleanup --agents 5" in run_command and "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
    for command in (run_command, test_command):
        assert command.index("pip install torch==2.13.0") < command.index("pip install -e")


def test_env_modules_import_no_heavy_dependencies():
    code = (
        "import sys, ssdinfluence, ssdinfluence.envs; "
        "bad = [m for m in ('torch', 'click', 'rich', 'h5py') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", ["ssdinfluence.config", "ssdinfluence.sweep", "ssdinfluence.cli",
                                    "ssdinfluence.runtime", "ssdinfluence.names"])
def test_configuring_and_the_command_line_import_no_torch(module):
    """``--help``, config validation and sweep expansion start without torch (seconds, 300 MB)."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_model_name_has_its_policy_class():
    from ssdinfluence.names import MODELS
    from ssdinfluence.policies import POLICIES, Policy

    assert tuple(POLICIES) == MODELS
    assert all(issubclass(cls, Policy) for cls in POLICIES.values())


def test_cli_rollout_and_info():
    runner = CliRunner()
    result = runner.invoke(main, ["rollout", "--env", "harvest", "--agents", "3", "--num-envs", "2",
                                  "--horizon", "50", "--episodes", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "collective return" in result.output and "200 env steps in" in result.output
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0 and "env cleanup: map 25x18, 9 actions" in result.output


def test_cli_bad_options_exit_2():
    runner = CliRunner()
    result = runner.invoke(main, ["rollout", "--env", "snake"])
    assert result.exit_code == 2 and "'snake' is not one of" in result.output
    result = runner.invoke(main, ["rollout", "--agents", "11"])
    assert result.exit_code == 2 and "too many agents for the map" in result.output


def test_repository_documents_itself():
    """Docs live in the repository: the README links docs/environments.md (never a path outside
    it); the LICENSE is the MIT text the metadata declares; CITATION.cff cites package and paper."""
    import tomllib

    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "](docs/environments.md)" in readme
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", readme) + ["LICENSE", "CITATION.cff"]:
        assert (ROOT / target).exists(), target
    rules = (ROOT / "docs" / "environments.md").read_text()
    for topic in ("## Maps", "## Agents and actions", "## One step", "## Rewards", "## Observations",
                  "## Differences from the reference", 'compat="reference"', "first view"):
        assert topic in rules, topic
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["requires-python"] == ">=3.11" and project["urls"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation and f"version: {project['version']}" in citation
    assert "Social Influence as Intrinsic Motivation" in citation and "Jaques" in citation


def test_ruff_targets_the_python_the_package_requires():
    """ruff's pyupgrade rules and the interpreter floor agree (requires-python >= 3.11: tomllib)."""
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    target = tomllib.loads((ROOT / "ruff.toml").read_text())["target-version"]
    assert requires == ">=3.11" and target == "py311"


def test_the_package_cites_only_what_it_ships():
    """Source and tests point to documents of this repository (docs/), never to files outside it."""
    cited = [f"{path.relative_to(ROOT)}:{number}" for folder in ("ssdinfluence", "tests")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bshared/spec\b|\.\./shared", line) and path.name != "test_project.py"]
    assert not cited, cited


def test_the_first_view_of_every_episode_shows_the_agents():
    """The documented difference from the reference (whose reset draws no agents): every agent
    sees itself in the centre of its first view, after reset and after an autoreset."""
    import numpy as np

    import ssdinfluence
    from ssdinfluence.envs import tiles

    env = ssdinfluence.make("cleanup", num_envs=3, num_agents=5, seed=2, horizon=4)
    palette = tiles.make_palette(5)
    own_colours = np.stack([palette[tiles.AGENT_BASE + k] for k in range(5)])  # [N, 3]
    obs, _ = env.reset()
    assert (obs[:, :, 7, 7] == own_colours).all()
    for _ in range(4):
        obs, _, _, truncated, _ = env.step(np.full((3, 5), 4))
    assert truncated.all() and (obs[:, :, 7, 7] == own_colours).all()


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs git and a checkout")
def test_committed_study_results_are_not_ignored_but_checkpoints_are():
    # A `runs/` pattern once silently ignored the study's runs/<trial>/metrics.csv, so a finished
    # trial never landed. What `ssdinfluence pack` writes for a repository must not match
    # .gitignore; the plain files it packs must.
    for trial in ("bench/results/study/harvest/runs/harvest-baseline-s0", "bench/results/learn-cleanup/search/arm"):
        paths = [f"{trial}/{name}" for name in ("metrics.csv", "metrics.csv.gz", "config.json", "checkpoint.pt",
                                                "checkpoint.pt.gz", "trajectories.h5")]
        check = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
        assert check.returncode in (0, 1), check.stderr
        assert set(check.stdout.split()) == {f"{trial}/{name}" for name in ("metrics.csv", "checkpoint.pt",
                                                                             "trajectories.h5")}
    run = subprocess.run(["git", "check-ignore", "--no-index", "runs/harvest-baseline-ppo-s0/metrics.csv"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.stdout.strip() == "runs/harvest-baseline-ppo-s0/metrics.csv"  # users' own runs stay out of git
