"""The package as users get it: ``pip wheel .`` builds a wheel that installs and runs in a fresh venv."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_builds_installs_and_runs_in_a_fresh_venv(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("ssdinfluence-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.11" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a checkout on the path would shadow the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, env=clean)  # first: plain torch pulls GBs
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, env=clean)
    elsewhere = {"cwd": tmp_path, "capture_output": True, "text": True, "check": True, "env": clean}
    code = ("import ssdinfluence, numpy as np\n"
            "assert 'site-packages' in ssdinfluence.__file__, ssdinfluence.__file__\n"
            "env = ssdinfluence.make('harvest', num_envs=2, num_agents=2, seed=0, horizon=3)\n"
            "obs, _ = env.reset()\n"
            "for _ in range(3):\n    obs, rewards, _, truncated, _ = env.step(np.full((2, 2), 4))\n"
            "print(obs.shape, bool(truncated.all()))\n")
    assert subprocess.run([str(python), "-c", code], **elsewhere).stdout.strip() == "(2, 2, 15, 15, 3) True"
    script = venv / "bin" / "ssdinfluence"
    assert "Sequential Social Dilemmas" in subprocess.run([str(script), "--help"], **elsewhere).stdout
    trained = subprocess.run([str(script), "run", "--env", "harvest", "--agents", "2", "--num-envs", "2",
                              "--rollout-length", "8", "--bptt-length", "8", "--ppo-minibatches", "1", "--steps", "16",
                              "--horizon", "10", "--quiet", "--out", str(tmp_path / "run")], **elsewhere)
    assert "1 updates, 16 env steps" in trained.stdout
