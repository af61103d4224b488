"""The documentation works: its code runs, its links resolve, its generated parts are current,
and it speaks of the package, not of how it was built.

Code blocks: every ```python block of README.md and docs/*.md runs, the blocks of one page in
order in one fresh interpreter (a page is read top to bottom, so a later block may use what an
earlier one made), in an empty directory. To run at a CI-small size, a line may end in a comment
``# tested with NAME=VALUE, NAME=VALUE``: the test replaces the value of each NAME on that line
(written ``NAME=...`` or ``"NAME": ...``) before running it. Blocks meant to be read, not run,
are fenced as ```text or ```bash. Every script in examples/ runs the same way, with small
arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TESTED_WITH = re.compile(r"#\s*tested with\s+(.+?)\s*$")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def small(block: str) -> str:
    """``block`` with the values named in its ``# tested with`` comments substituted."""
    lines = []
    for line in block.splitlines():
        match = TESTED_WITH.search(line)
        if match:
            code, comment = line[:match.start()], line[match.start():]
            for setting in match.group(1).split(","):
                name, _, value = setting.strip().partition("=")
                pattern = rf"((?<![\w.])\b{re.escape(name)}\s*=\s*|[\"']{re.escape(name)}[\"']\s*:\s*)[^,)}}\]\s]+"
                code, count = re.subn(pattern, lambda m, value=value: m.group(1) + value, code)
                assert count, f"'# tested with {name}=...' names nothing on its line: {line!r}"
            line = code + comment
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_python(code: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_tested_with_convention_substitutes_both_spellings():
    block = ('build_config({"steps": 2_000_000, "num_envs": 128})  # tested with steps=64, num_envs=8\n'
             'make("harvest", horizon=1000)  # tested with horizon=10\n')
    assert small(block) == ('build_config({"steps": 64, "num_envs": 8})  # tested with steps=64, num_envs=8\n'
                            'make("harvest", horizon=10)  # tested with horizon=10\n')
    with pytest.raises(AssertionError, match="names nothing"):
        small("x = 1  # tested with steps=2\n")


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page.read_text())]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[page.name for page in PAGES_WITH_CODE])
def test_python_blocks_run(page, tmp_path):
    code = "\n".join(small(block) for block in python_blocks(page.read_text()))
    result = run_python(code, tmp_path)
    assert result.returncode == 0, f"{page.name}:\n{code}\n--- output ---\n{result.stdout}\n{result.stderr}"


def test_every_page_that_shows_python_is_run():
    """README, environments, training, influence, analysis and sweeps carry runnable examples."""
    names = {page.name for page in PAGES_WITH_CODE}
    assert {"README.md", "environments.md", "training.md", "influence.md", "analysis.md", "sweeps.md"} <= names


def run_script(script: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, capture_output=True,
                            text=True, timeout=180, env=dict(os.environ, MPLBACKEND="Agg"))
    assert result.returncode == 0, f"examples/{script} {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_example_scripts_run(tmp_path):
    """Every script in examples/, as a user runs it, at a small size; the ones that read a run read
    the run that train_and_analyze.py makes (their default path)."""
    scripts = sorted(path.name for path in (ROOT / "examples").glob("*.py"))
    assert scripts == ["compare_seeds.py", "pettingzoo_random.py", "random_rollout.py", "read_log_h5py.py",
                       "render_replay.py", "train_and_analyze.py", "train_vec_ppo.py"], "a new example needs a run here"
    output = run_script("random_rollout.py", "--num-envs", "2", "--episodes", "1", cwd=tmp_path)
    assert "episode 1: collective return" in output
    assert "collective return:" in run_script("pettingzoo_random.py", cwd=tmp_path)
    output = run_script("train_and_analyze.py", "--steps", "2048", "--num-envs", "8", "--horizon", "64",
                        cwd=tmp_path)
    assert "mean influence per agent" in output
    assert "episodes; collective return per episode" in run_script("read_log_h5py.py", cwd=tmp_path)
    output = run_script("render_replay.py", "runs/example-influence", "-o", "replay.gif", "--frames", "0:20",
                        cwd=tmp_path)
    assert (tmp_path / "replay.gif").stat().st_size > 0 and "20 frames" in output
    output = run_script("compare_seeds.py", "--models", "baseline", "--seeds", "2", "--steps", "1024",
                        "--num-envs", "8", "--horizon", "32", cwd=tmp_path)
    assert "seeds [0, 1]" in output and (tmp_path / "runs" / "compare" / "curves.png").exists()
    output = run_script("train_vec_ppo.py", "--num-envs", "2", "--agents", "2", "--steps", "128", "--rollout", "32",
                        "--horizon", "16", cwd=tmp_path)
    assert "update 2: 128 env steps" in output


# -- links and generated pages -------------------------------------------------------------------


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    found = set()
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def test_links_and_anchors_resolve():
    """Every relative link of README.md, docs/ and experiments/README.md names a file that exists,
    and every #anchor a heading of its page (what a documentation site's strict build checks)."""
    broken = []
    for page in [*PAGES, ROOT / "experiments" / "README.md"]:
        text = page.read_text()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_generated_docs_are_current():
    """docs/api.md and the configuration tables of docs/training.md are what docs/generate.py
    makes from the docstrings, Config and the command line's help."""
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_the_api_reference_covers_the_public_api():
    api = (ROOT / "docs" / "api.md").read_text()
    for name in ("### make\n", "### make_vec", "### BatchedEnv", "### SSDParallelEnv", "### Config", "### train\n",
                 "### evaluate", "### TrajectoryReader", "### analyze_run", "### compare_runs", "### render_episode",
                 "### causal_influence", "### SweepSpec", "#### BatchedEnv.step", "#### TrajectoryReader.episode"):
        assert name in api, name
    training = (ROOT / "docs" / "training.md").read_text()
    from ssdinfluence.config import FIELDS

    for field in FIELDS:  # every Config field has its row
        assert f"| `{field}` | `--{field.replace('_', '-')}" in training, field


# -- the project speaks of itself alone ----------------------------------------------------------

# Words of a lab notebook: they date a statement to a stretch of work or a machine of the past,
# instead of to a machine, a command and a date. Chosen so that ordinary uses ("the latest
# collective return", "the previous action", the reference's "issue #192") do not match.
DIARY = re.compile(
    r"\bsessions?\b|\bthis sitting\b|\bworking period\b|\bwork period\b"
    r"|\b(?:earlier|later|latest|previous|last|next|today's|yesterday's|other) (?:machine|run of the project|session)s?\b"
    r"|\b(?:at|until) the time of writing\b|\bas of this writing\b|\bso far in this\b"
    r"|\bwas measured (?:earlier|before|then)\b|\bthe default then\b|\bnow the default\b"
    r"|\(issue \d+\)|\bissue \d+\b(?! of the reference)",
    flags=re.I)
SPEAKING_FILES = ["README.md", "docs", "examples", "bench", "experiments"]
SUFFIXES = {".md", ".py", ".sh", ".toml", ".txt"}


def speaking_files() -> list[Path]:
    files = []
    for name in SPEAKING_FILES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
            continue
        files += [file for file in sorted(path.rglob("*")) if file.suffix in SUFFIXES and "results" not in file.parts
                  and "__pycache__" not in file.parts]
    return files


@pytest.mark.parametrize("text, diary", [
    ("Measured in this session with the commands given.", True),
    ("on the latest session's 2-core Xeon", True),
    ("An earlier machine trained 2.4x slower.", True),
    ("Done in this sitting.", True),
    ("figures of one working period", True),
    ("# Findings (issue 14)", True),
    ("the latest collective return", False),
    ("every agent's previous action", False),
    ("rotated by 180 degrees (its issue #192)", False),
    ("on a 2-core Intel Xeon, 2026-12-05", False),
])
def test_the_diary_words_are_found(text, diary):
    assert bool(DIARY.search(text)) is diary


def test_no_file_narrates_its_own_development():
    found = []
    for file in speaking_files():
        for number, line in enumerate(file.read_text().splitlines(), 1):
            match = DIARY.search(line)
            if match:
                found.append(f"{file.relative_to(ROOT)}:{number}: {match.group(0)!r} in {line.strip()!r}")
    assert not found, "development-diary wording (say what is true, on which machine, with which command):\n" + \
        "\n".join(found)


def test_readme_is_a_front_page():
    """The README stays short and links one page per topic; results are stated once, each with its
    command, and the detail lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in ("environments", "training", "influence", "analysis", "sweeps", "performance", "reproduction", "api"):
        assert f"](docs/{page}.md)" in readme, page
    for section in ("## Quick start", "## Results", "## How it compares", "## Documentation", "## Citing",
                    "## Licence"):
        assert section in readme, section
    assert not re.search(r"\b[0-9a-f]{7}\b", re.sub(r"```.*?```", "", readme, flags=re.S)), "commit hash in README"
