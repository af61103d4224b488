"""``ssdinfluence sweep``: many training runs (models x seeds x hyperparameters) in parallel."""

from __future__ import annotations

import click

from ..config import MODELS, PRESETS
from ..names import ENV_NAMES
from .errors import FileProblem
from .flags import StepCount, parse_setting
from .training import TRACK, WANDB_PROJECT


@click.command()
@click.option("--config", "spec_file", type=click.Path(dir_okay=False),
              help="Sweep TOML file: name, preset, [base], [grid], [random], [seeds] (see examples/sweep.toml).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the sweep in this directory with the spec it saved.")
@click.option("--env", type=click.Choice(ENV_NAMES), help="Game of every trial.")
@click.option("--models", help="Comma-separated models, one axis of the sweep, e.g. baseline,influence,moa.")
@click.option("--seeds", type=click.IntRange(1), help="Seeds 0..N-1 of every configuration.")
@click.option("--steps", type=StepCount(), help="Env steps of every trial, e.g. 5e6.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any Config field for every trial (repeatable); env_kwargs.KEY=VALUE for env parameters.")
@click.option("--preset", type=click.Choice(PRESETS), help="The paper's best hyperparameters for each trial's env and model.")
@click.option("--name", help="Sweep name (default directory sweeps/NAME).")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory.  [default: sweeps/NAME or sweeps/ENV]")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes on this machine; ray: tasks on a Ray cluster (pip install \"ssdinfluence[ray]\").")
@click.option("--workers", type=click.IntRange(1),
              help="Trials at once (local default: min(trials, cores); ray default: all, Ray queues them).")
@click.option("--threads-per-trial", type=click.IntRange(1),
              help="Threads of each trial (local default: cores // workers; ray default: --cpus-per-trial).")
@click.option("--ray-address",
              help="Ray cluster to join: auto on a node of a running cluster (default: start a local Ray). "
                   "The sweep directory must be on a filesystem every node mounts at the same path.")
@click.option("--cpus-per-trial", type=click.IntRange(1), default=1, show_default=True, help="ray: CPUs per trial.")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="ray: GPUs per trial; a fraction shares a GPU (0.25: four trials per GPU).")
@click.option("--dry-run", is_flag=True, help="Print the trials and their status; run nothing.")
@click.option("--quiet", is_flag=True, help="No live table; one line per trial that starts or ends.")
@TRACK
@WANDB_PROJECT
def sweep(spec_file, resume_dir, env, models, seeds, steps, settings, preset, name, out, backend, workers,
          threads_per_trial, ray_address, cpus_per_trial, gpus_per_trial, dry_run, quiet, track, wandb_project):
    """Run a sweep of trials (one run directory each) with a manifest; rerun to resume it.

    Finished trials are skipped, interrupted ones resume from their checkpoints, failed ones
    are tried again. Ctrl-C stops every trial after its current update, with a checkpoint.
    With --track every trial is tracked as its own run (named by its id).
    """
    from ..sweep import SweepSpec, expand, import_ray, load_spec, plan, read_spec
    from ..threads import check_thread_count
    from ..tracking import check_installed

    try:
        check_installed(track)  # in the driver, before any trial starts
    except ImportError as error:
        raise click.BadParameter(str(error), param_hint="--track") from error
    spec_flags = {"--config": spec_file, "--env": env, "--models": models, "--seeds": seeds, "--steps": steps,
                  "--set": settings, "--preset": preset, "--name": name, "--out": out}
    try:
        if backend == "ray":
            import_ray()
        elif threads_per_trial is not None:
            check_thread_count(threads_per_trial)  # each trial runs here: refused before anything is written
        if resume_dir:
            given = [flag for flag, value in spec_flags.items() if value]
            if given:
                raise click.UsageError(f"cannot give {', '.join(given)} with --resume: the sweep keeps its spec")
            spec, out = read_spec(resume_dir), resume_dir
        else:
            spec = load_spec(spec_file) if spec_file else SweepSpec()
            _apply_flags(spec, env, models, seeds, steps, settings, preset, name)
            out = out or f"sweeps/{spec.name or _default_name(spec)}"
        trials = expand(spec)
        records = plan(out, trials)
    except ImportError as error:
        raise click.BadParameter(str(error), param_hint="--backend") from error
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--config" if spec_file else "options") from error

    from rich.console import Console

    console = Console()
    if dry_run:
        console.print(_table(records, f"{len(trials)} trials in {out} (dry run: nothing runs)", every_row=True))
        return
    envs = sorted({r["env"] for r in records if r["status"] != "finished"})
    _run_with_display(console, out, spec, envs, backend, quiet,
                      dict(workers=workers, threads_per_trial=threads_per_trial, ray_address=ray_address,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                           track=None if track == "none" else {"kind": track, "project": wandb_project}))


def _apply_flags(spec, env, models, seeds, steps, settings, preset, name) -> None:
    """Command-line flags win over the sweep file: a flag replaces an axis of the same option."""
    values = {}
    if env:
        values["env"] = env
    if steps:
        values["steps"] = steps
    for setting in settings:
        try:
            key, value = parse_setting(setting)
        except click.BadParameter as error:
            raise click.BadParameter(error.message, param_hint="--set") from error
        if "." in key:  # env_kwargs.horizon=100: one entry of a table option
            table, entry = key.split(".", 1)
            values[table] = {**spec.base.get(table, {}), **values.get(table, {}), entry: value}
        else:
            values[key] = value
    for key, value in values.items():
        spec.grid.pop(key, None)
        spec.random.pop(key, None)
        spec.base[key] = value
    if models is not None:
        if "model" in values:
            raise click.UsageError(f"--models {models} and --set model={values['model']} both set the model: give one")
        chosen = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in MODELS]
        if unknown or not chosen:
            raise click.BadParameter(f"unknown model(s) {unknown or models!r}; available: {', '.join(MODELS)}",
                                     param_hint="--models")
        spec.base.pop("model", None)
        spec.grid = {"model": chosen, **{k: v for k, v in spec.grid.items() if k != "model"}}
    if seeds:
        spec.seeds = list(range(seeds))
    if preset:
        spec.preset = preset
    if name:
        spec.name = name


def _default_name(spec) -> str:
    envs = spec.grid.get("env") or [spec.base.get("env", "cleanup")]
    return "-".join(envs)


def _run_with_display(console, out: str, spec, envs: list[str], backend: str, quiet: bool, options: dict) -> None:
    """Run the sweep with a live table (or log lines), then the summary; ``envs``: the games of
    the trials left to run. Exit status 1 if a trial failed, 130 after a second Ctrl-C."""
    from rich.live import Live

    from ..envs import make
    from ..sweep import load_manifest, run_sweep

    if backend == "local" and envs:  # compile here once: the workers then load the kernels from the disk cache
        with console.status("compiling env kernels (cached after the first run)"):
            for env in envs:
                make(env).warmup()
    console.print(f"[bold]ssdinfluence sweep[/] -> {out} ({backend} backend)")
    seen = {}

    def log_changes(records):
        for r in records:
            if seen.get(r["id"]) != r["status"]:
                seen[r["id"]] = r["status"]
                if r["status"] != "pending":
                    console.print(f"{r['id']}: {r['status']} ({_steps(r)} steps)")

    # without a terminal (a log file, a cluster job) the live table would only show at the end
    live = None if quiet or not console.is_terminal else Live(console=console, refresh_per_second=2)

    def on_progress(records):
        if live:
            live.update(_table(records, f"sweep {out}"))
        else:
            log_changes(records)

    def on_wait(run_dirs, timeout_s):
        console.print(f"waiting up to {timeout_s:.0f} s for {len(run_dirs)} trial(s) still training in another "
                      f"process (a sweep driver that was killed stops them after their current update): "
                      + ", ".join(map(str, run_dirs)))

    aborted = False
    try:
        if live:
            live.start()
        records = run_sweep(out, spec, backend=backend, on_progress=on_progress, on_wait=on_wait, **options)
    except KeyboardInterrupt:
        aborted = True
        records = load_manifest(out)
    except ValueError as error:  # another driver holds the sweep directory, or a trial's stays held
        raise FileProblem(str(error)) from error
    finally:
        if live:
            live.stop()
    counts = {status: sum(r["status"] == status for r in records) for status in
              ("finished", "failed", "interrupted", "pending")}
    console.print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f"; sweep directory {out}")
    for r in records:
        if r["status"] == "failed" and r["error"]:
            console.print(f"[red]{r['id']} failed[/]: {r['error'].strip().splitlines()[-1]}")
    if counts["finished"] < len(records):
        console.print(f"Resume (finished trials are skipped) with:\n  ssdinfluence sweep --resume {out}"
                      + (" --backend ray" if backend == "ray" else ""))
    if aborted:
        raise SystemExit(130)
    if counts["failed"]:
        raise SystemExit(1)


def _steps(record: dict) -> str:
    return f"{record['env_steps']:,}/{record['total_steps']:,}"


def _table(records: list[dict], title: str, every_row: bool = False):
    from rich.table import Table

    table = Table(title=title)
    for column in ("trial", "status", "env steps", "collective return", "ETA", "attempts"):
        table.add_column(column, justify="left" if column in ("trial", "status") else "right",
                         no_wrap=column == "trial")
    colours = {"finished": "green", "failed": "red", "interrupted": "yellow", "running": "cyan", "pending": "dim"}
    long = len(records) > 20 and not every_row  # a long sweep: the trials that need attention, counts of the rest
    shown = [r for r in records if not long or r["status"] in ("running", "failed", "interrupted")]
    for r in shown:
        ret = "" if r["collective_return"] is None else f"{r['collective_return']:.1f}"
        eta = "" if r["eta_s"] is None else f"{r['eta_s'] / 60:.0f} min" if r["eta_s"] >= 60 else f"{r['eta_s']:.0f} s"
        table.add_row(r["id"], f"[{colours[r['status']]}]{r['status']}[/]", _steps(r), ret, eta, str(r["attempts"]))
    if long:
        rest = {s: sum(r["status"] == s for r in records) for s in ("finished", "pending")}
        table.caption = f"not shown: {rest['finished']} finished, {rest['pending']} pending"
    return table


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def pack(paths):
    """Pack run or sweep directories for a repository: gzip copies (*.gz) of what a fresh clone
    needs. Every run gets metrics.csv.gz; an unfinished one also its checkpoint (and episode
    log), so that `run --resume` or `sweep --resume` in a fresh clone goes on from it, and a
    finished one loses its packed checkpoint. A sweep directory may carry at most one unfinished
    trial (keep the repository small: run the trials one at a time). Stop the training first.
    """
    import json
    from pathlib import Path

    from ..rundir import RunDirError, RunFiles, in_use
    from ..rundir import pack as pack_run
    from ..sweep import load_manifest
    from ..sweep.manifest import checkpoint_steps

    runs = []  # (run directory, unfinished)
    for path in map(Path, paths):
        if (path / "manifest.json").exists():
            trials = [(path / r["run_dir"], r["status"] != "finished") for r in load_manifest(path)
                      if (path / r["run_dir"] / "config.json").exists()]
            carried = [str(d) for d, unfinished in trials if unfinished and RunFiles(d).checkpoint.exists()]
            if len(carried) > 1:
                raise FileProblem(f"{path}: {len(carried)} unfinished trials have checkpoints ({', '.join(carried)}); "
                                  f"a repository carries at most one: finish the others first (--workers 1 runs "
                                  f"one trial at a time)")
            runs += trials
        elif (path / "config.json").exists():
            steps = json.loads((path / "config.json").read_text()).get("steps")
            try:
                done = checkpoint_steps(path)
            except ValueError as error:
                raise FileProblem(str(error)) from error
            runs.append((path, done is not None and not (isinstance(steps, int) and done >= steps)))
        else:
            raise click.BadParameter(f"{path}: neither a run directory (config.json) nor a sweep (manifest.json)",
                                     param_hint="PATHS")
    for run_dir, _ in runs:
        if in_use(run_dir):
            raise FileProblem(f"{run_dir}: a process is training in it; stop it (Ctrl-C), then pack")
    for run_dir, unfinished in runs:
        try:
            written = pack_run(run_dir, unfinished)
        except RunDirError as error:
            raise FileProblem(str(error)) from error
        size = sum(p.stat().st_size for p in written)
        click.echo(f"{run_dir}: {'unfinished, ' if unfinished else ''}{', '.join(p.name for p in written) or 'nothing'}"
                   f" ({size / 2**20:.1f} MiB)")

