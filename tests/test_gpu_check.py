"""bench/gpu_check.sh works: its CPU run at CI-small size goes through every step and writes its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run(*args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def test_cpu_run_writes_every_result(tmp_path):
    out = tmp_path / "results"
    done = run("--device", "cpu", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] and summary["device"] == "cpu"
    assert [step["step"] for step in summary["steps"]] == ["train_speed", "double_buffer", "influence_kernel"]
    for name, double_buffer in (("train_speed", False), ("double_buffer", True)):
        results = json.loads((out / f"gpu_check_{name}.json").read_text())
        assert results["meta"]["complete"]
        assert [row["model"] for row in results["rows"]] == ["baseline", "influence", "moa", "comm"]
        assert all(row["env_steps_per_s"] > 0 and row["device"] == "cpu" and row["double_buffer"] == double_buffer
                   for row in results["rows"])
    kernel = json.loads((out / "gpu_check_influence_kernel.json").read_text())["rows"]
    assert kernel and all(row["device"] == "cpu" and row["kernel_ms"] > 0 for row in kernel)


def test_bad_arguments_exit_2(tmp_path):
    done = run("--device", "tpu", tmp_path=tmp_path)
    assert done.returncode == 2 and "--device must be cuda or cpu" in done.stderr
    assert run("--frobnicate", tmp_path=tmp_path).returncode == 2
