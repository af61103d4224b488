"""Analysis of saved runs: what the agents did, curves across seeds, comparison with the paper.

Everything here reads run directories written by the trainer (``config.json``, ``metrics.csv``,
``trajectories.h5``) and never reruns training or imports torch.

* :func:`find_runs` / :func:`load_run`: locate and read run directories.
* :func:`analyze_log` / :func:`analyze_run`: social outcomes, influence statistics and the
  communication measures of the paper over the last logged episodes of one run.
* :func:`compare_runs`: final metrics per configuration, mean and 95% confidence interval over
  seeds, next to the paper's supplement Table 4 (:data:`PAPER_TABLE4`).
* :func:`learning_curves` / :func:`plot_curves`: a metric against env steps per configuration,
  mean and confidence band across seeds (plotting needs matplotlib: ``ssdinfluence[viz]``).

Runs are grouped into *configurations*: runs whose config differs only in the seed (and in
settings that do not change training, :data:`IGNORED_FIELDS`) are seeds of one configuration.
A configuration is labelled by its model (plus ``+transform`` for a reward transform) and any
other setting that differs between the configurations being compared (``influence lr=0.0003``).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config, build_config
from .metrics import OUTCOME_KEYS, influence_statistics, instantaneous_coordination, speaker_consistency
from .rundir import DiskFullError, is_disk_full, open_metrics, saved_metrics
from .trajectories import TrajectoryReader

__all__ = [
    "PAPER_TABLE4",
    "REFERENCE_PPO",
    "Run",
    "RunError",
    "analyze_log",
    "analyze_run",
    "compare_runs",
    "confidence_interval",
    "find_runs",
    "learning_curves",
    "load_run",
    "paper_value",
    "plot_curves",
]

# Supplement Table 4 of Jaques et al. (2019): final collective reward (sum of the 5 agents'
# environment reward per 1000-step episode), best hyperparameters, 5 seeds. Keyed by our label.
PAPER_TABLE4 = {
    "cleanup": {"baseline": 89, "baseline+inequity": 275, "influence": 190, "comm": 166, "moa": 392},
    "harvest": {"baseline": 485, "baseline+inequity": 750, "influence": 1073, "comm": 951, "moa": 588},
}

# The reference implementation's PPO (eugenevinitsky/sequential_social_dilemma_games, its
# README's plots: collective return, mean of 5 seeds, read off the SVG) as (env steps, value).
REFERENCE_PPO = {
    "cleanup": {"baseline": ((1e7, 10), (2e7, 36), (3e7, 80), (5e7, 148), (1e8, 288), (5e8, 625)),
                "moa": ((1e7, 20), (2e7, 120), (5e7, 255))},
    "harvest": {"baseline": ((3.5e6, 590), (1e7, 350), (5e8, 211))},
}

# Config fields that never change what is learned: runs differing only in these (and the seed)
# are seeds of one configuration.
IGNORED_FIELDS = {"seed", "out", "device", "threads", "steps", "log_trajectories", "log_every",
                  "log_observations", "checkpoint_every"}
_DEFAULTS = Config().to_dict()

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom (beyond: the normal 1.96).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


class RunError(ValueError):
    """A path that is not a readable run directory (or holds no runs, or an empty log)."""


@dataclass
class Run:
    """One run directory: ``config`` (the trainer's config.json as a dict) and ``metrics``
    (metrics.csv as column name -> ``[U] float64``, one row per update, empty cells NaN)."""

    root: Path
    config: dict
    metrics: dict

    @property
    def env(self) -> str:
        return self.config["env"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def model_label(self) -> str:
        """The model, plus ``+transform`` when a reward transform is on (``baseline+inequity``)."""
        transform = self.config.get("reward_transform", "none")
        return self.config["model"] + ("" if transform == "none" else f"+{transform}")

    @property
    def trajectories(self) -> Path:
        return self.root / "trajectories.h5"

    def final(self, column: str, window: float = 0.1) -> float:
        """Mean of ``column`` over the updates in the last ``window`` fraction of env steps.

        Rows without a value (updates in which no episode ended) are ignored; if no row in the
        window has one (a short run, whose envs all end their episodes together), the last row
        that has one is used; NaN if none has."""
        steps, values = self.metrics["env_steps"], self.metrics[column]
        finite = np.isfinite(values)
        in_window = finite & (steps >= (1.0 - window) * steps[-1])
        if in_window.any():
            return float(values[in_window].mean())
        return float(values[finite][-1]) if finite.any() else float("nan")


# ---------------------------------------------------------------------------- reading runs


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def find_runs(paths) -> list[Path]:
    """Run directories among ``paths``: each path is a run directory (it has ``config.json``)
    or a directory searched recursively for run directories (a sweep, ``runs/``).

    Raises :class:`RunError` for a missing path or one that holds no run.
    """
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise RunError(f"{path}: no such directory")
        if not path.is_dir():
            raise RunError(f"{path}: not a directory (give a run directory holding config.json)")
        runs = [path] if _is_run(path) else sorted(p.parent for p in path.rglob("config.json"))
        if not runs:
            raise RunError(f"{path}: no run found (a run directory holds config.json and metrics.csv)")
        found += [run for run in runs if run not in found]
    return found


def _read_metrics(path: Path) -> dict:
    with open_metrics(path) as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise RunError(f"{path}: no metrics yet (the run has not finished an update)")
    header, body = rows[0], rows[1:]
    lines = [number for number, row in enumerate(body, start=2) if len(row) == len(header)]
    body = [row for row in body if len(row) == len(header)]  # a row cut short by a kill
    if not body:
        raise RunError(f"{path}: no complete row ({len(rows) - 1} row(s), all shorter or longer than its "
                       f"{len(header)}-column header)")
    try:
        values = np.array([[float(cell) if cell not in ("", "nan") else np.nan for cell in row] for row in body])
    except ValueError as error:
        bad = next(n for n, row in zip(lines, body, strict=True) if not _numeric(row))
        raise RunError(f"{path}: line {bad} is damaged ({error})") from error
    return {name: values[:, i] for i, name in enumerate(header)}


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row if cell]
    except ValueError:
        return False
    return True


def load_run(path) -> Run:
    """Read a run directory's config.json and metrics.csv; :class:`RunError` if unreadable."""
    root = Path(path)
    if not root.is_dir():
        raise RunError(f"{root}: no such run directory")
    reading = root / "config.json"
    try:
        config = json.loads(reading.read_text())
        reading = saved_metrics(root)
        metrics = _read_metrics(reading)
    except RunError:
        raise
    except FileNotFoundError as error:
        raise RunError(f"{root}: not a run directory ({Path(error.filename).name} is missing)") from error
    except (OSError, EOFError, ValueError) as error:  # UnicodeDecodeError, JSONDecodeError, gzip's BadGzipFile
        raise RunError(f"{reading}: unreadable ({error})") from error
    if not isinstance(config, dict):
        raise RunError(f"{root / 'config.json'}: not a run configuration (a JSON {type(config).__name__})")
    for name in ("env", "model", "seed"):
        if name not in config:
            raise RunError(f"{root / 'config.json'}: no {name!r} field, not a config written by the trainer")
    try:  # checked as a resume checks it: a wrong-typed or absurd field is named, not a traceback later
        agents = build_config(config).agents
    except ValueError as error:
        raise RunError(f"{root / 'config.json'}: {error}") from error
    for name in ("env_steps", "collective_return", *(f"return_agent_{k}" for k in range(agents))):
        if name not in metrics:
            raise RunError(f"{root / 'metrics.csv'}: no {name!r} column; not the metrics of the run in "
                           f"{root / 'config.json'} ({agents} agents)")
    return Run(root, config, metrics)


# ---------------------------------------------------------------------------- one run


def _mean_std(values: np.ndarray) -> dict:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {"mean": None, "std": None}
    return {"mean": float(finite.mean()), "std": float(finite.std())}


def _best_pair(matrix: np.ndarray) -> dict:
    """The max over ordered pairs of an ``[N, N]`` matrix with NaN diagonal, and the mean."""
    if not np.isfinite(matrix).any():
        return {"max": None, "pair": None, "mean": None}
    k, j = np.unravel_index(np.nanargmax(matrix), matrix.shape)
    return {"max": float(matrix[k, j]), "pair": [int(k), int(j)], "mean": float(np.nanmean(matrix))}


def analyze_log(reader: TrajectoryReader, last: int = 10) -> dict:
    """Measures over the last ``last`` logged episodes of a trajectory log.

    Returns a JSON-ready dict: ``episodes`` (how many were used), ``collective_return`` and each
    social outcome as ``{"mean", "std"}`` over episodes, ``returns_per_agent`` ``[N]``; with
    logged influence ``influence`` = ``{"mean_per_agent" [N], "moment_share" [N], "pairs"
    [N][N]}``; ``coordination`` with ``action_action`` (and ``symbol_action`` when messages
    were logged), each ``{"overall", "moments"}`` of ``{"max", "pair" [k, j], "mean"}`` in nats
    (``moments`` needs logged influence); with messages ``speaker_consistency`` =
    ``{"per_agent" [N], "mean"}``. Missing measures are None.

    Raises :class:`RunError` if the log holds no episode.
    """
    if reader.num_episodes == 0:
        raise RunError(f"{reader.path}: the trajectory log holds no complete episode yet")
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive integer, got {last!r}")
    index = reader.episodes()
    chosen = range(max(0, reader.num_episodes - last), reader.num_episodes)
    returns = index["returns"][chosen.start:]  # [K, N]
    out = {"episodes": len(chosen), "collective_return": _mean_std(returns.sum(axis=1)),
           "returns_per_agent": returns.mean(axis=0).tolist()}
    for name in OUTCOME_KEYS:
        out[name] = _mean_std(index[name][chosen.start:]) if name in index else {"mean": None, "std": None}

    fields = ["actions"] + [name for name in ("influence", "influence_pairs", "messages") if name in reader.step_fields]
    steps = {name: [] for name in fields}
    for k in chosen:
        episode = reader.episode(k)
        for name in fields:
            steps[name].append(episode[name])
    steps = {name: np.concatenate(parts) for name, parts in steps.items()}
    lengths = index["length"][chosen.start:]
    A = reader.num_actions

    moments = None
    out["influence"] = None
    if "influence" in steps:
        stats = influence_statistics(steps["influence"], steps.get("influence_pairs"))
        moments = stats["moments"]
        out["influence"] = {"mean_per_agent": stats["mean"].tolist(), "moment_share": stats["moment_share"].tolist(),
                            "pairs": stats["pairs"].tolist() if "pairs" in stats else None}

    def coordination(source, size):
        overall = instantaneous_coordination(source, steps["actions"], size, A, episode_length=lengths)
        at_moments = (instantaneous_coordination(source, steps["actions"], size, A, lengths, moments)
                      if moments is not None else np.full_like(overall, np.nan))
        return {"overall": _best_pair(overall), "moments": _best_pair(at_moments)}

    out["coordination"] = {"action_action": coordination(steps["actions"], A), "symbol_action": None}
    out["speaker_consistency"] = None
    if "messages" in steps:
        vocabulary = int(reader.config.get("vocabulary") or steps["messages"].max() + 1)
        out["coordination"]["symbol_action"] = coordination(steps["messages"], vocabulary)
        per_agent = speaker_consistency(steps["messages"], steps["actions"], max(vocabulary, 2), A)
        out["speaker_consistency"] = {"per_agent": per_agent.tolist(), "mean": float(np.nanmean(per_agent))}
    return out


def analyze_run(path, last: int = 10, window: float = 0.1) -> dict:
    """Everything :command:`ssdinfluence analyze` shows for one run directory, JSON-ready.

    Keys: ``run``, ``env``, ``model``, ``seed``, ``env_steps`` (reached), ``final`` (from
    metrics.csv over the last ``window`` of env steps: ``collective_return``, each social
    outcome, ``returns_per_agent`` [N], and for influence models ``influence_per_agent`` [N]),
    and ``log``: :func:`analyze_log` of the last ``last`` logged episodes, or None when the run
    logged no trajectories.
    """
    run = load_run(path)
    N = int(run.config["agents"])
    final = {name: run.final(name, window) for name in ("collective_return", *OUTCOME_KEYS) if name in run.metrics}
    final["returns_per_agent"] = [run.final(f"return_agent_{k}", window) for k in range(N)]
    if "influence_agent_0" in run.metrics:
        final["influence_per_agent"] = [run.final(f"influence_agent_{k}", window) for k in range(N)]
    final = _json_floats(final)
    log = None
    if run.trajectories.exists():
        with TrajectoryReader(run.trajectories) as reader:
            if reader.num_episodes:
                log = analyze_log(reader, last)
    return {"run": str(run.root), "env": run.env, "model": run.model_label, "seed": run.seed,
            "env_steps": int(run.metrics["env_steps"][-1]), "final": final, "log": log}


def _json_floats(value):
    """NaN -> None throughout (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_floats(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------- across seeds


def _t95(n: int) -> float:
    """The 95% two-sided t quantile for the mean of n >= 2 values (n - 1 degrees of freedom)."""
    return _T95[n - 2] if n - 1 <= len(_T95) else 1.96


def confidence_interval(values) -> tuple[float, float, int]:
    """Mean, half-width of the two-sided 95% Student t interval of the mean, and the count.

    Args:
        values: ``[S]`` float (NaN ignored).

    Returns:
        ``(mean, half_width, n)``: half-width NaN for one value; mean NaN for none.
    """
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(values[0]), float("nan"), 1
    return float(values.mean()), float(_t95(n) * values.std(ddof=1) / math.sqrt(n)), n


def _configurations(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """Runs grouped into configurations, each with a readable label (see the module docstring)."""
    def key(run):
        # A config.json written before a setting existed ran with its default (new settings
        # default to the old behaviour), so a missing field is compared as that default.
        config = {**_DEFAULTS, **run.config}
        return {k: v for k, v in config.items() if k not in IGNORED_FIELDS}

    groups: list[tuple[dict, list[Run]]] = []
    for run in runs:
        for config, members in groups:
            if config == key(run):
                members.append(run)
                break
        else:
            groups.append((key(run), [run]))
    # Settings that differ between configurations of the same env and model name the label.
    labels = []
    for config, members in groups:
        rivals = [c for c, m in groups if m[0].env == members[0].env and m[0].model_label == members[0].model_label]
        differing = sorted(k for k in config if k not in ("model", "reward_transform", "env")
                           and any(json.dumps(c.get(k), sort_keys=True) != json.dumps(config[k], sort_keys=True)
                                   for c in rivals))
        extra = " ".join(f"{k}={json.dumps(config[k], sort_keys=True)}" for k in differing)
        labels.append(f"{members[0].model_label} {extra}".strip())
    return [(label, members) for label, (_, members) in zip(labels, groups, strict=True)]


def paper_value(env: str, label: str):
    """The paper's Table 4 collective reward for this env and configuration label, or None."""
    return PAPER_TABLE4.get(env, {}).get(label.split(" ")[0])


def _nonlearning(run: Run, window: float, min_agent_return: float) -> bool:
    """True if some agent's final mean return is below ``min_agent_return`` (it never learned
    to collect apples: the paper drops such Harvest seeds)."""
    N = int(run.config["agents"])
    finals = [run.final(f"return_agent_{k}", window) for k in range(N)]
    return any(not value >= min_agent_return for value in finals)  # NaN counts as not learned


def compare_runs(runs, metrics=("collective_return", *OUTCOME_KEYS), window: float = 0.1,
                 drop_nonlearning: bool = False, min_agent_return: float = 1.0) -> list[dict]:
    """Final metrics per configuration: mean and 95% CI over seeds, next to the paper.

    Args:
        runs: run directories or :class:`Run` objects (any mix of envs and models).
        metrics: metrics.csv columns to summarise (each run's value is its mean over the
            updates in the last ``window`` fraction of its env steps).
        drop_nonlearning: drop runs in which some agent's final mean return is below
            ``min_agent_return`` (the paper's rule for Harvest: seeds where one agent never
            learned to collect apples are dropped); dropped seeds are listed.

    Returns:
        One dict per configuration, sorted by env then label: ``env``, ``label``, ``seeds``
        (kept), ``dropped`` (seeds), ``env_steps`` (the smallest final step count of its
        runs), ``paper`` (Table 4 collective reward or None) and per metric ``{"mean",
        "ci", "n", "values"}`` (``ci`` the half-width; None where undefined).
    """
    runs = [run if isinstance(run, Run) else load_run(run) for run in runs]
    unknown = sorted({m for m in metrics for run in runs if m not in run.metrics})
    if unknown:
        raise RunError(f"metric(s) {unknown} not in every run's metrics.csv")
    rows = []
    for label, members in _configurations(runs):
        kept = [run for run in members if not (drop_nonlearning and _nonlearning(run, window, min_agent_return))]
        row = {"env": members[0].env, "label": label, "seeds": [run.seed for run in kept],
               "dropped": [run.seed for run in members if run not in kept],
               "env_steps": int(min(run.metrics["env_steps"][-1] for run in members)),
               "paper": paper_value(members[0].env, label)}
        for metric in metrics:
            values = [run.final(metric, window) for run in kept]
            mean, ci, n = confidence_interval(values)
            row[metric] = _json_floats({"mean": mean, "ci": ci, "n": n, "values": values})
        rows.append(row)
    return sorted(rows, key=lambda row: (row["env"], row["label"]))


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` finite values at each row (NaN where none)."""
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lag = np.arange(len(values)) - window
    prev_sums = np.where(lag >= 0, sums[np.maximum(lag, 0)], 0.0)
    prev_counts = np.where(lag >= 0, counts[np.maximum(lag, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > prev_counts, (sums - prev_sums) / (counts - prev_counts), np.nan)


def learning_curves(runs, metric: str = "collective_return", smooth: int = 10, points: int = 200) -> list[dict]:
    """A metric against env steps per configuration, mean and 95% band across seeds.

    Each run's column is smoothed (trailing mean over ``smooth`` updates), then interpolated
    onto ``points`` env-step values spanning the steps all of the configuration's runs reached.

    Returns:
        One dict per configuration (sorted by env, label): ``env``, ``label``, ``seeds``,
        ``steps`` ``[P] float64``, ``mean`` ``[P]``, ``low`` / ``high`` ``[P]`` (the band;
        equal to the mean for a single seed), ``paper`` (Table 4 value or None).
    """
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive number of updates, got {smooth!r}")
    runs = [run if isinstance(run, Run) else load_run(run) for run in runs]
    missing = sorted({str(run.root) for run in runs if metric not in run.metrics})
    if missing:
        raise RunError(f"metric {metric!r} is not a column of metrics.csv in {', '.join(missing)}")
    curves = []
    for label, members in _configurations(runs):
        series = []
        for run in members:
            steps, values = run.metrics["env_steps"], _smooth(run.metrics[metric], smooth)
            keep = np.isfinite(values)
            if keep.any():
                series.append((steps[keep], values[keep]))
        if not series:
            continue
        lo, hi = max(s[0] for s, _ in series), min(s[-1] for s, _ in series)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi], np.float64)
        stacked = np.stack([np.interp(grid, s, v) for s, v in series])  # [S, P]
        mean = stacked.mean(axis=0)
        if len(series) > 1:
            half = _t95(len(series)) * stacked.std(axis=0, ddof=1) / math.sqrt(len(series))
        else:
            half = np.zeros_like(mean)
        curves.append({"env": members[0].env, "label": label, "seeds": [run.seed for run in members],
                       "steps": grid, "mean": mean, "low": mean - half, "high": mean + half,
                       "paper": paper_value(members[0].env, label) if metric == "collective_return" else None})
    return sorted(curves, key=lambda c: (c["env"], c["label"]))


def _seeds(seeds: list) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError('plotting needs matplotlib: pip install "ssdinfluence[viz]"') from error
    matplotlib.use("Agg")  # files only; works headless
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs, path, metric: str = "collective_return", smooth: int = 10, paper: bool = True,
                reference: bool = True, ymin: float | None = None) -> Path:
    """Plot :func:`learning_curves` into ``path`` (.png, .pdf or .svg): one panel per env, a
    line and confidence band per configuration; for collective return, with ``paper`` the
    Table 4 value of each configuration as a dashed line, and with ``reference`` the reference
    implementation's PPO curve of its model (:data:`REFERENCE_PPO`) as dotted markers, up to the
    runs' last step. ``ymin`` cuts the y axis there (Cleanup's first updates, when every agent
    still fires its penalty beam, reach -5000). Returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"{path}: plot files must end in .png, .pdf or .svg")
    curves = learning_curves(runs, metric, smooth)
    if not curves:
        raise RunError(f"no run has a finite {metric!r} value to plot yet")
    plt = _pyplot()
    envs = sorted({c["env"] for c in curves})
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for i, curve in enumerate(c for c in curves if c["env"] == env):
            colour = f"C{i % 10}"
            ax.plot(curve["steps"], curve["mean"], color=colour, label=f"{curve['label']} ({_seeds(curve['seeds'])})")
            ax.fill_between(curve["steps"], curve["low"], curve["high"], color=colour, alpha=0.2, linewidth=0)
            if paper and curve["paper"] is not None:
                ax.axhline(curve["paper"], color=colour, linestyle="--", linewidth=1)
            points = [p for p in REFERENCE_PPO.get(env, {}).get(curve["label"].split(" ")[0], ())
                      if p[0] <= 1.05 * curve["steps"][-1]]
            if reference and metric == "collective_return" and points:
                ax.plot(*zip(*points, strict=True), color=colour, linestyle=":", marker="o",
                        label=f"reference PPO, {curve['label'].split(' ')[0]}")
        ax.set_title(env + (" (dashed: paper, Table 4)" if paper and metric == "collective_return" else ""))
        ax.set_xlabel("env steps")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if ymin is not None:
            ax.set_ylim(bottom=ymin)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # never leave a half-written plot
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)
    except Exception as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFullError(path) from error
        raise
    finally:
        plt.close(fig)
    return path
