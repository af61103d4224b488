"""Training and playing commands: ``ssdinfluence run | eval | rollout | info``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from .. import __version__
from ..config import DEVICES, PRESETS, RESUMABLE
from ..names import ENV_NAMES
from ..tracking import TRACKERS
from .errors import DiskFull, FileProblem
from .flags import config_flags

TRACK = click.option("--track", type=click.Choice(TRACKERS), default="none", show_default=True,
                     help='Also send each update\'s metrics to TensorBoard (RUN_DIR/tensorboard; pip install '
                          '"ssdinfluence[tensorboard]") or Weights & Biases (offline without network; pip install '
                          '"ssdinfluence[wandb]").')
WANDB_PROJECT = click.option("--wandb-project", default="ssdinfluence", show_default=True, help="W&B project.")


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file of options (any Config field); flags override it.")
@click.option("--preset", type=click.Choice(PRESETS), help="The paper's best hyperparameters for env and model.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--horizon", type=click.IntRange(1), help="Episode length (short for --env-kwargs horizon=N).  [default: 1000]")
@TRACK
@WANDB_PROJECT
@click.option("--quiet", is_flag=True, help="No live display; one line per 10 updates.")
@config_flags
@click.pass_context
def run(ctx, config_file, preset, resume_dir, horizon, track, wandb_project, quiet, **flags):
    """Train independent agents with live progress; Ctrl-C stops cleanly and prints how to resume.

    Every field of ssdinfluence.config.Config has a flag; precedence: defaults < --preset <
    --config file < flags.
    """
    from ..config import build_config, load_toml, merge
    from ..rundir import RunDirError, RunFiles, unpack
    from ..tracking import check_installed

    try:
        check_installed(track)
    except ImportError as error:
        raise click.BadParameter(str(error), param_hint="--track") from error
    given = {name for name in flags if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    values = {name: flags[name] for name in given}
    if horizon is not None:
        if "horizon" in values.get("env_kwargs", {}):
            raise click.UsageError(f"--horizon {horizon} and --env-kwargs horizon={values['env_kwargs']['horizon']} "
                                   f"both set the horizon: give one of them")
        values["env_kwargs"] = {**values.get("env_kwargs", {}), "horizon": horizon}
    try:
        if resume_dir:
            files = RunFiles(Path(resume_dir))
            try:
                unpack(files.root)  # a run carried in a repository (ssdinfluence pack) to this clone
            except RunDirError as error:
                raise FileProblem(str(error)) from error
            if not files.checkpoint.exists() or not files.config.exists():
                raise click.BadParameter(f"{resume_dir} has no checkpoint.pt and config.json to resume",
                                         param_hint="--resume")
            fixed = sorted(set(values) - RESUMABLE) + (["preset"] if preset else []) + (["config"] if config_file else [])
            if fixed:
                raise click.UsageError(f"cannot change {', '.join(fixed)} when resuming (only steps, device, threads)")
            saved = {**_read_saved_config(files.config), "out": str(files.root)}
            try:
                build_config(saved)
            except ValueError as error:
                raise FileProblem(f"{files.config}: not a usable run configuration ({error})") from error
            config = build_config({**saved, **values})  # a new steps, device or threads value at fault
        else:
            config = build_config(merge(load_toml(config_file) if config_file else {}, values, preset=preset))
            if not config.out:
                config.out = f"runs/{config.env}-{config.model}-{config.algo}-s{config.seed}"
            if RunFiles(Path(config.out)).checkpoint.exists():
                raise click.BadParameter(
                    f"{config.out} already holds a run; resume it with --resume {config.out} or choose another --out",
                    param_hint="--out")
        from ..train import training_device  # here: torch loads only once the options are good

        training_device(config)  # no CUDA, or a rollout too big for the GPU: refused before anything is written
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--config" if config_file else "options") from error
    _train_with_display(config, resume=bool(resume_dir), quiet=quiet, track=track, wandb_project=wandb_project)


class LiveRows:
    """The rows the live display shows: each update's own, with the episode columns (NaN when no
    episode ended in it) replaced by the last update that had them, marked with its number."""

    def __init__(self):
        from ..metrics import OUTCOME_KEYS

        self.episode_columns = ("episodes", "collective_return", *OUTCOME_KEYS)
        self.last_episodes = None  # (update, row) of the last update in which episodes ended

    def __call__(self, row: dict) -> tuple[dict, str]:
        """``(row to show, note)``; the note says which update the episode values come from."""
        if row["episodes"]:
            self.last_episodes = (row["update"], row)
            return row, ""
        if self.last_episodes is None:
            return row, "no episode has ended yet"
        update, old = self.last_episodes
        episode_keys = [k for k in old if k in self.episode_columns or k.startswith("return_agent_")]
        return {**row, **{k: old[k] for k in episode_keys}}, f"(episodes of update {update})"


def cell(value, spec: str) -> str:
    """``value`` formatted with ``spec``, or "-" where it is undefined (NaN or missing): equality
    with negative returns, sustainability when nobody ate, any measure before an episode ends."""
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def eta_seconds(row: dict, total_steps: int) -> float:
    """Time left at this update's throughput; shown from the first update on."""
    return max(total_steps - row["env_steps"], 0) / row["sps"] if row["sps"] > 0 else float("nan")


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _read_saved_config(path: Path) -> dict:
    """A run's config.json as a dict; FileProblem naming it if it is unreadable or damaged."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FileProblem(f"{path}: cannot read the run's configuration ({error})") from error
    if not isinstance(saved, dict):
        raise FileProblem(f"{path}: not a run configuration (a JSON {type(saved).__name__}, not an object)")
    return saved


def _train_with_display(config, resume: bool, quiet: bool, track: str = "none", wandb_project: str = "ssdinfluence"):
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from .. import rundir
    from ..checkpoint import CheckpointError
    from ..envs import make
    from ..train import TrainingDiverged, train
    from ..trajectories import TrajectoryFileError

    console = Console()
    console.print(f"[bold]ssdinfluence run[/]: {config.env}, {config.agents} agents, model {config.model}, "
                  f"{config.algo}, {config.steps:,} steps, {config.num_envs} envs -> {config.out}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                        TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=console)
    task = progress.add_task("training", total=config.steps, eta="-:--:--")
    table = Table()
    live_rows = LiveRows()

    def render(row, note):
        table = Table(box=None, show_header=False, padding=(0, 2))
        for _ in range(4):
            table.add_column()
        agents = "  ".join(cell(row.get(f"return_agent_{k}"), ".1f") for k in range(config.agents))
        table.add_row("env steps/s", f"{row['sps']:,.0f}", "update", f"{row['update']}")
        table.add_row("collective return", f"{cell(row['collective_return'], '.1f')} {note}".rstrip(),
                      "episodes", f"{row['episodes']}")
        table.add_row("per-agent returns", agents, "lr", f"{row['lr']:.2e}")
        table.add_row("efficiency / equality", f"{cell(row['efficiency'], '.3f')} / {cell(row['equality'], '.3f')}",
                      "sustainability / peace", f"{cell(row['sustainability'], '.1f')} / {cell(row['peace'], '.1f')}")
        table.add_row("policy / value loss", f"{row['policy_loss']:.4f} / {row['value_loss']:.4f}",
                      "entropy", f"{row['entropy']:.3f}")
        if "influence_weight" in row:
            exerted = "  ".join(f"{row[f'influence_agent_{k}']:.3f}" for k in range(config.agents))
            table.add_row("influence per agent", exerted, "influence weight", f"{row['influence_weight']:.3f}")
        return table

    def on_update(row):
        progress.update(task, completed=row["env_steps"], eta=_format_duration(eta_seconds(row, config.steps)))
        shown, note = live_rows(row)
        if quiet:
            if row["update"] % 10 == 0:
                console.print(f"update {row['update']}: {row['env_steps']:,} steps, {row['sps']:,.0f} steps/s, "
                              f"collective return {cell(shown['collective_return'], '.1f')} {note}".rstrip())
        else:
            live.update(Group(progress, render(shown, note)))

    def run(on_update):
        return train(config, resume=resume, on_update=on_update, track=track, project=wandb_project,
                     on_tracking=lambda where: console.print(f"tracking: {where}"))

    try:
        with console.status("compiling env kernels (cached after the first run)"):
            make(config.env, num_agents=config.agents, **config.env_kwargs).warmup()
        if quiet:  # no live display at all: one line per 10 updates
            result = run(on_update)
        else:
            with Live(Group(progress, table), console=console, refresh_per_second=4, transient=False) as live:
                result = run(on_update)
    except (CheckpointError, rundir.RunDirError, TrajectoryFileError) as error:
        raise FileProblem(str(error)) from error
    except TrainingDiverged as error:
        raise click.ClickException(str(error)) from error
    except rundir.DiskFullError as error:
        kept = rundir.RunFiles(Path(config.out)).checkpoint.exists()
        raise DiskFull(f"{error}; " + (f"the last checkpoint is kept: free some space, then ssdinfluence run "
                                       f"--resume {config.out}" if kept else "no checkpoint was written yet")
                       ) from error
    console.print(f"{result.updates} updates, {result.env_steps:,} env steps; run directory {result.run_dir}")
    if result.stopped_early:
        console.print(f"[yellow]stopped early[/]: checkpoint saved. Resume with:\n"
                      f"  ssdinfluence run --resume {result.run_dir}")


@click.command(name="eval")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path())
@click.option("--episodes", type=click.IntRange(1), default=10, show_default=True)
@click.option("--num-envs", type=click.IntRange(1), default=None, help="Envs in parallel (default: min(episodes, 16)).")
@click.option("--seed", type=click.IntRange(0), default=12345, show_default=True)
@click.option("--greedy", is_flag=True, help="Take the most likely action instead of sampling.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--record", type=click.Path(dir_okay=False), default=None, help="Write the episodes to this HDF5 file.")
@click.option("--overwrite", is_flag=True, help="Let --record replace an existing file.")
def eval_command(checkpoint_path, episodes, num_envs, seed, greedy, device, record, overwrite):
    """Play EPISODES episodes with a checkpoint's policies and print the measures."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from ..checkpoint import CheckpointError
    from ..evaluate import check_record_target, evaluate
    from ..rundir import RunDirError
    from ..trajectories import TrajectoryFileError

    try:
        if record:
            check_record_target(record)  # before the --overwrite hint, which would not help
            if Path(record).exists() and not overwrite:
                raise click.BadParameter(f"{record} already exists; pass --overwrite to replace it",
                                         param_hint="--record")
        result = evaluate(checkpoint_path, episodes=episodes, num_envs=num_envs, seed=seed, greedy=greedy,
                          device=device, record=record, overwrite=overwrite)
    except CheckpointError as error:
        raise click.BadParameter(str(error), param_hint="CHECKPOINT") from error
    except (RunDirError, TrajectoryFileError) as error:
        raise FileProblem(str(error)) from error
    except ValueError as error:  # envs that do not fit the memory
        raise click.BadParameter(str(error), param_hint="--num-envs") from error
    config = result["config"]
    table = Table(title=f"{config.env}, model {config.model}: {episodes} episodes ({'greedy' if greedy else 'sampled'})")
    table.add_column("measure")
    table.add_column("mean", justify="right")
    table.add_column("std", justify="right")
    rows = [("collective return", result["collective_return"])]
    rows += [(f"agent_{k} return", result["returns"][:, k]) for k in range(config.agents)]
    rows += [(name, result[name]) for name in ("efficiency", "equality", "sustainability", "peace")]
    for name, values in rows:
        finite = values[np.isfinite(values)]  # equality and sustainability can be undefined (NaN)
        table.add_row(name, f"{finite.mean():.3f}" if finite.size else "n/a",
                      f"{finite.std():.3f}" if finite.size else "n/a")
    Console().print(table)
    if record:
        click.echo(f"episodes written to {record}")


@click.command()
@click.option("--env", "env_name", type=click.Choice(ENV_NAMES), default="cleanup", show_default=True)
@click.option("--agents", type=click.IntRange(1), default=5, show_default=True, help="Agents per env.")
@click.option("--num-envs", type=click.IntRange(1), default=64, show_default=True, help="Envs stepped together.")
@click.option("--episodes", type=click.IntRange(1), default=1, show_default=True, help="Episodes per env.")
@click.option("--horizon", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="Numba threads (default: all cores).")
def rollout(env_name, agents, num_envs, episodes, horizon, seed, threads):
    """Play uniformly random policies and report the episodes' returns."""
    import numba
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from ..envs import make
    from ..threads import check_thread_count

    if threads is not None:
        try:
            check_thread_count(threads)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--threads") from error
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    console = Console()
    try:
        env = make(env_name, num_envs=num_envs, num_agents=agents, seed=seed, horizon=horizon)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    with console.status("compiling kernels (cached after the first run)"):
        env.warmup()
    rng = np.random.default_rng(seed)
    actions = np.empty((num_envs, agents), np.int32)
    env.reset()
    returns = []
    start = time.perf_counter()
    for _ in range(episodes * horizon):
        actions[:] = rng.integers(0, env.num_actions, actions.shape)
        _, _, _, truncated, info = env.step(actions)
        if truncated.any():
            returns.append(info["episode_returns"][truncated].copy())
    elapsed = time.perf_counter() - start
    per_episode = np.concatenate(returns)  # [episodes * B, N]
    collective = per_episode.sum(axis=1)
    table = Table(title=f"{env_name}: random policy, {agents} agents, {len(collective)} episodes of {horizon} steps")
    table.add_column("measure")
    table.add_column("mean", justify="right")
    table.add_column("std", justify="right")
    table.add_row("collective return", f"{collective.mean():.1f}", f"{collective.std():.1f}")
    for k in range(agents):
        table.add_row(f"agent_{k} return", f"{per_episode[:, k].mean():.1f}", f"{per_episode[:, k].std():.1f}")
    console.print(table)
    steps = episodes * horizon * num_envs
    console.print(f"{steps:,} env steps in {elapsed:.2f} s: {steps / elapsed:,.0f} env steps/s "
                  f"(random actions drawn in numpy included)")


@click.command()
def info():
    """Version, device, Numba threads and the available envs."""
    import numba
    import numpy as np
    import torch

    from ..envs import make

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    click.echo(f"ssdinfluence {__version__}")
    click.echo(f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    click.echo(f"device: {device}")
    click.echo(f"numba threads: {numba.get_num_threads()} (threading layer: {numba.config.THREADING_LAYER})")
    for name in ENV_NAMES:
        env = make(name)
        click.echo(f"env {name}: map {env.layout.shape[0]}x{env.layout.shape[1]}, {env.num_actions} actions, "
                   f"up to {len(env.layout.spawn_points)} agents")

