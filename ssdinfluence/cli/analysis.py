"""Commands that read saved runs: ``ssdinfluence analyze | plot | compare | report``.

Each is a thin layer over :mod:`ssdinfluence.analysis`: it turns :class:`RunError` (missing
run, empty log, unreadable file) and bad options into click errors (exit code 2).
"""

from __future__ import annotations

import json

import click

RUNS = click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path())
WINDOW = click.option("--window", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
                      help="Final metrics: mean over the last fraction of each run's env steps.")
DROP = click.option("--drop-nonlearning", is_flag=True,
                    help="Drop seeds where an agent's final return is below --min-agent-return (the paper's Harvest rule).")
MIN_RETURN = click.option("--min-agent-return", type=float, default=1.0, show_default=True)
METRIC = click.option("--metric", default="collective_return", show_default=True, help="Any metrics.csv column.")
SMOOTH = click.option("--smooth", type=click.IntRange(1), default=10, show_default=True,
                      help="Trailing mean over this many updates.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _fmt_small(value) -> str:
    """Influence and probabilities span many orders of magnitude: 3 significant digits."""
    return "n/a" if value is None else f"{value:.3g}"


def _fmt_steps(steps: int) -> str:
    return f"{steps / 1e6:.3g}M" if steps >= 1e5 else f"{steps:,}"


def _console():
    """A rich console; piped into a file or another program its tables are not squeezed into 80
    columns (a terminal's own width is used when there is one)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _find(run_dirs):
    from ..analysis import RunError, find_runs

    try:
        return find_runs(run_dirs)
    except RunError as error:
        raise click.BadParameter(str(error), param_hint="RUN_DIR") from error


@click.command()
@RUNS
@click.option("--last", type=click.IntRange(1), default=10, show_default=True,
              help="Logged episodes (the latest) that the log measures use.")
@WINDOW
@AS_JSON
def analyze(run_dirs, last, window, as_json):
    """Returns, social outcomes, influence and communication measures of saved runs.

    RUN_DIR is a run directory or a directory of runs (searched recursively). Final values come
    from metrics.csv; the per-episode measures from the last logged episodes of trajectories.h5.
    """
    from ..analysis import RunError, analyze_run
    from ..trajectories import TrajectoryFileError

    try:
        results = [analyze_run(path, last=last, window=window) for path in _find(run_dirs)]
    except (RunError, TrajectoryFileError) as error:
        raise click.BadParameter(str(error), param_hint="RUN_DIR") from error
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    console = _console()
    for result in results:
        for table in _analysis_tables(result):
            console.print(table)


def _analysis_tables(result: dict) -> list:
    from rich.table import Table

    final, log = result["final"], result["log"]
    N = len(final["returns_per_agent"])
    title = f"{result['run']}: {result['env']}, model {result['model']}, seed {result['seed']}, " \
            f"{result['env_steps']:,} env steps"
    caption = None if log else ("no logged episode (trajectories.h5 missing or empty): influence moments, "
                                "coordination and speaker consistency need --log-trajectories")
    outcomes = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    outcomes.add_column("measure")
    outcomes.add_column("final (metrics.csv)", justify="right")
    if log:
        outcomes.add_column(f"last {log['episodes']} logged episodes", justify="right")
    for name in ("collective_return", "efficiency", "equality", "sustainability", "peace"):
        cells = [_fmt(final.get(name), 3)]
        if log:
            cells.append(f"{_fmt(log[name]['mean'], 3)} ± {_fmt(log[name]['std'], 3)}")
        outcomes.add_row(name.replace("_", " "), *cells)
    tables = [outcomes]

    agents = Table(title="per agent", title_justify="left")
    columns = {"return (final)": final["returns_per_agent"]}
    if final.get("influence_per_agent"):
        columns["influence (final)"] = final["influence_per_agent"]
    if log and log["influence"]:
        columns["influence (log)"] = log["influence"]["mean_per_agent"]
        columns["influential moments"] = log["influence"]["moment_share"]
    if log and log["speaker_consistency"]:
        columns["speaker consistency"] = log["speaker_consistency"]["per_agent"]
    agents.add_column("agent")
    for name in columns:
        agents.add_column(name, justify="right")
    for k in range(N):
        agents.add_row(str(k), _fmt(final["returns_per_agent"][k], 1),
                       *(_fmt_small(values[k]) for name, values in columns.items() if name != "return (final)"))
    tables.append(agents)

    if log and log["influence"] and log["influence"]["pairs"]:
        pairs = Table(title="influence of agent k (row) on agent j (column), mean per step", title_justify="left")
        pairs.add_column("k \\ j")
        for j in range(N):
            pairs.add_column(str(j), justify="right")
        for k, row in enumerate(log["influence"]["pairs"]):
            pairs.add_row(str(k), *("-" if j == k else _fmt_small(v) for j, v in enumerate(row)))
        tables.append(pairs)

    if log:
        coordination = Table(title="instantaneous coordination I(x_t^k; a_t+1^j), nats: max over pairs (k -> j)",
                             title_justify="left")
        for name in ("kind", "overall", "at influential moments"):
            coordination.add_column(name, justify="left" if name == "kind" else "right")
        for kind, label in (("symbol_action", "symbol / action"), ("action_action", "action / action")):
            entry = log["coordination"][kind]
            if entry:
                coordination.add_row(label, *(
                    "n/a" if entry[when]["max"] is None
                    else f"{entry[when]['max']:.4f} ({entry[when]['pair'][0]} -> {entry[when]['pair'][1]})"
                    for when in ("overall", "moments")))
        tables.append(coordination)
    return tables


@click.command()
@RUNS
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Image file: .png, .pdf or .svg.")
@METRIC
@SMOOTH
@click.option("--paper/--no-paper", default=True, show_default=True,
              help="Dashed lines at the paper's Table 4 values (collective return).")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Dotted markers at the reference implementation's PPO curve (collective return).")
@click.option("--ymin", type=float, default=None, help="Cut the y axis at this value (e.g. -50 for Cleanup's first updates).")
def plot(run_dirs, output, metric, smooth, paper, reference, ymin):
    """Learning curves: a metric against env steps, mean and 95% band across seeds per model."""
    runs = _find(run_dirs)
    path = _plot(runs, output, metric, smooth, paper, reference, ymin)
    click.echo(f"{len(runs)} run(s) plotted to {path}")


def _plot(runs, output, metric, smooth, paper=True, reference=True, ymin=None):
    from ..analysis import RunError, plot_curves

    try:
        return plot_curves(runs, output, metric=metric, smooth=smooth, paper=paper, reference=reference, ymin=ymin)
    except RunError as error:
        raise click.BadParameter(str(error), param_hint="--metric" if metric in str(error) else "RUN_DIR") from error
    except ImportError as error:
        raise click.UsageError(str(error)) from error
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--output") from error


@click.command()
@RUNS
@WINDOW
@DROP
@MIN_RETURN
@AS_JSON
def compare(run_dirs, window, drop_nonlearning, min_agent_return, as_json):
    """Final metrics per model (mean ± 95% CI over seeds) next to the paper's Table 4."""
    rows = _comparison(_find(run_dirs), window, drop_nonlearning, min_agent_return)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_comparison(rows)


@click.command()
@click.argument("sweep_dir", type=click.Path())
@WINDOW
@DROP
@MIN_RETURN
@click.option("--unfinished", is_flag=True, help="Also include trials that have not finished (interrupted, failed).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Curves file (.png, .pdf, .svg).  [default: SWEEP_DIR/curves.png]")
@click.option("--no-plot", is_flag=True, help="Only the table.")
@METRIC
@SMOOTH
@AS_JSON
def report(sweep_dir, window, drop_nonlearning, min_agent_return, unfinished, output, no_plot, metric, smooth,
           as_json):
    """A sweep's comparison across models and seeds next to the paper's Table 4, and its curves."""
    from collections import Counter
    from pathlib import Path

    from ..rundir import saved_metrics
    from ..sweep import load_manifest

    root = Path(sweep_dir)
    try:
        records = load_manifest(root)
        if not isinstance(records, list) or not all(isinstance(r, dict) and "status" in r for r in records):
            raise ValueError("its trials are not a list of trial records")
    except (AttributeError, KeyError, OSError, ValueError) as error:  # a damaged manifest.json
        message = str(error) if str(root) in str(error) else f"{root / 'manifest.json'}: {error}"
        raise click.BadParameter(message, param_hint="SWEEP_DIR") from error
    counts = Counter(record["status"] for record in records)
    wanted = [r for r in records if r["status"] == "finished" or unfinished]
    runs = [root / r["run_dir"] for r in wanted if saved_metrics(root / r["run_dir"]).exists()]
    if not runs:
        raise click.BadParameter(f"{root}: no {'trial' if unfinished else 'finished trial'} has metrics yet "
                                 f"({', '.join(f'{n} {s}' for s, n in counts.items())})", param_hint="SWEEP_DIR")
    runs = _load(runs)
    rows = _comparison(runs, window, drop_nonlearning, min_agent_return)
    if as_json:
        click.echo(json.dumps({"trials": dict(counts), "comparison": rows}, indent=2))
    else:
        click.echo(f"{root}: {len(records)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for record in records:
            if record["status"] == "failed" and record.get("error"):
                click.echo(f"  failed {record['id']}: {record['error'].strip().splitlines()[-1]}")
        print_comparison(rows)
    if not no_plot:
        if not _has_curves(runs, metric, smooth):  # a fresh sweep whose short trials ended no episode yet
            if not as_json:
                click.echo(f"no curves yet: no run has a finite {metric!r} value (no episode has ended)")
            return
        path = _plot(runs, output or root / "curves.png", metric, smooth)
        if not as_json:
            click.echo(f"curves of {len(runs)} run(s) in {path}")


def _load(paths):
    """Each run read once, for both the table and the curves."""
    from ..analysis import RunError, load_run

    try:
        return [load_run(path) for path in paths]
    except RunError as error:
        raise click.BadParameter(str(error), param_hint="SWEEP_DIR") from error


def _has_curves(runs, metric, smooth) -> bool:
    """Whether any run has a value of ``metric`` to plot; a bad ``metric`` is a usage error."""
    from ..analysis import RunError, learning_curves

    try:
        return bool(learning_curves(runs, metric, smooth))
    except RunError as error:
        raise click.BadParameter(str(error), param_hint="--metric") from error


def _comparison(runs, window, drop_nonlearning, min_agent_return) -> list[dict]:
    from ..analysis import RunError, compare_runs

    try:
        return compare_runs(runs, window=window, drop_nonlearning=drop_nonlearning, min_agent_return=min_agent_return)
    except RunError as error:
        raise click.BadParameter(str(error), param_hint="RUN_DIR") from error


def print_comparison(rows: list[dict]) -> None:
    """Print :func:`~ssdinfluence.analysis.compare_runs` rows: one rich table per env."""
    from rich.table import Table

    from ..metrics import OUTCOME_KEYS

    def cell(entry, digits):
        if entry["mean"] is None:
            return "n/a"
        return _fmt(entry["mean"], digits) + ("" if entry["ci"] is None else f" ± {_fmt(entry['ci'], digits)}")

    console = _console()
    for env in sorted({row["env"] for row in rows}):
        table = Table(title=f"{env}: final metrics, mean ± 95% CI over seeds; paper: Table 4", title_justify="left")
        table.add_column("model", no_wrap=True)
        table.add_column("seeds")
        for name in ("steps", "return", "paper", "effic.", "equal.", "sust.", "peace"):
            table.add_column(name, justify="right")
        for row in (row for row in rows if row["env"] == env):
            seeds = ",".join(map(str, row["seeds"])) + (f" (dropped {','.join(map(str, row['dropped']))})"
                                                        if row["dropped"] else "")
            table.add_row(row["label"], seeds, _fmt_steps(row["env_steps"]), cell(row["collective_return"], 1),
                          "-" if row["paper"] is None else str(row["paper"]),
                          *(cell(row[name], 2 if name != "sustainability" else 0) for name in OUTCOME_KEYS))
        console.print(table)
