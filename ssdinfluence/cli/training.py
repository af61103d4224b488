"""Training and playing commands: ``ssdinfluence run | eval | rollout | info``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np

from .. import __version__
from ..config import ALGOS, DEVICES, MODELS, PRESETS, RESUMABLE
from ..envs import ENV_NAMES, make
from .errors import DiskFull, FileProblem


class StepCount(click.ParamType):
    """A positive integer that may be written as 5e6 or 5_000_000."""

    name = "steps"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            self.fail(f"{value!r} is not a number of steps (e.g. 5000000 or 5e6)", param, ctx)
        if not math.isfinite(number) or number < 1 or number != int(number):
            self.fail(f"{value!r} must be a positive whole number of steps", param, ctx)
        return int(number)


# CLI flag -> Config field, for the options that map one to one.
RUN_OPTIONS = {
    "env": "env", "agents": "agents", "model": "model", "algo": "algo", "steps": "steps",
    "num_envs": "num_envs", "seed": "seed", "device": "device", "out": "out",
    "rollout_length": "rollout_length", "bptt_length": "bptt_length", "lr": "lr", "lr_end": "lr_end",
    "entropy_coef": "entropy_coef", "ppo_epochs": "ppo_epochs", "ppo_minibatches": "ppo_minibatches",
    "reward_transform": "reward_transform", "log_trajectories": "log_trajectories",
    "log_every": "log_every", "log_observations": "log_observations", "checkpoint_every": "checkpoint_every",
    "threads": "threads", "influencers": "influencers", "influencee_reward": "influencee_reward",
    "divergence": "divergence", "influence_weight": "influence_weight", "extrinsic_weight": "extrinsic_weight",
    "influence_clip": "influence_clip", "influence_ramp_steps": "influence_ramp_steps",
    "influence_schedule": "influence_schedule", "vocabulary": "vocabulary", "moa_loss_weight": "moa_loss_weight",
}


@click.command()
@click.option("--env", type=click.Choice(ENV_NAMES), help="Game.  [default: cleanup]")
@click.option("--agents", type=click.IntRange(1), help="Agents per env.  [default: 5]")
@click.option("--model", type=click.Choice(MODELS),
              help="baseline, visible (sees others' previous actions), influence (basic social influence), "
                   "moa (influence through a model of other agents), moa-baseline (the MOA as an auxiliary task), "
                   "comm (influential communication) or comm-baseline (messages trained on the env reward).")
@click.option("--algo", type=click.Choice(ALGOS), help="ppo or a2c.  [default: ppo]")
@click.option("--steps", type=StepCount(), help="Total env steps, e.g. 5e6.  [default: 5e6]")
@click.option("--num-envs", type=click.IntRange(1), help="Envs stepped together.  [default: 32]")
@click.option("--seed", type=click.IntRange(0), help="Seed of env, weights and sampling.  [default: 0]")
@click.option("--device", type=click.Choice(DEVICES), help="auto picks CUDA when available.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.  [default: runs/ENV-MODEL-ALGO-sSEED]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file of options (any Config field); flags override it.")
@click.option("--preset", type=click.Choice(PRESETS), help="The paper's best hyperparameters for env and model.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--rollout-length", type=click.IntRange(1), help="Steps per env between updates.")
@click.option("--bptt-length", type=click.IntRange(1), help="Truncated BPTT chunk length.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Initial learning rate.")
@click.option("--lr-end", type=click.FloatRange(min=0), help="Final learning rate (linear annealing).")
@click.option("--entropy-coef", type=click.FloatRange(min=0), help="Entropy bonus weight.")
@click.option("--ppo-epochs", type=click.IntRange(1))
@click.option("--ppo-minibatches", type=click.IntRange(1))
@click.option("--reward-transform", type=click.Choice(["none", "collective", "prosocial", "inequity"]))
@click.option("--horizon", type=click.IntRange(1), help="Episode length.  [default: 1000]")
@click.option("--log-trajectories", help="Env indices whose episodes go to trajectories.h5, e.g. 0,1 ('' for none).")
@click.option("--log-every", type=click.IntRange(1), help="Log every k-th episode of those envs.")
@click.option("--log-observations/--no-log-observations", default=None, help="Also store the 15x15 views.")
@click.option("--checkpoint-every", type=click.IntRange(1), help="Updates between checkpoints.")
@click.option("--threads", type=click.IntRange(0), help="CPU threads for envs and torch (0: all).")
@click.option("--influencers", type=click.IntRange(1), help="influence: agents 0..m-1 act first and are rewarded.")
@click.option("--influencee-reward/--no-influencee-reward", default=None,
              help="influence: influencees also get the influence they felt.")
@click.option("--divergence", type=click.Choice(["kl", "jsd", "pmi"]), help="Influence divergence.  [default: kl]")
@click.option("--influence-weight", type=click.FloatRange(min=0), help="beta, the influence reward's weight.")
@click.option("--extrinsic-weight", type=click.FloatRange(min=0), help="alpha, the env reward's weight.")
@click.option("--influence-clip", type=click.FloatRange(min=0), help="Clip the influence reward (0: off).  [default: 10]")
@click.option("--influence-ramp-steps", type=StepCount(), help="Curriculum: beta ramps up over C env steps.")
@click.option("--influence-schedule", type=click.Choice(["linear", "reference"]),
              help="reference: the reference's piecewise multipliers on top of the ramp.")
@click.option("--vocabulary", type=click.IntRange(2), help="comm: number of discrete messages.")
@click.option("--moa-loss-weight", type=click.FloatRange(min=0), help="moa: weight of the MOA cross-entropy.")
@click.option("--quiet", is_flag=True, help="No live display; one line per 10 updates.")
@click.pass_context
def run(ctx, config_file, preset, resume_dir, horizon, quiet, **flags):
    """Train independent agents with live progress; Ctrl-C stops cleanly and prints how to resume."""
    from ..config import build_config, load_toml, preset_values
    from ..rundir import RunFiles

    given = {name for name in flags if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    values = {RUN_OPTIONS[name]: flags[name] for name in given}
    if horizon is not None:
        values["env_kwargs"] = {"horizon": horizon}
    try:
        if resume_dir:
            files = RunFiles(Path(resume_dir))
            if not files.checkpoint.exists() or not files.config.exists():
                raise click.BadParameter(f"{resume_dir} has no checkpoint.pt and config.json to resume",
                                         param_hint="--resume")
            fixed = sorted(set(values) - RESUMABLE) + (["preset"] if preset else []) + (["config"] if config_file else [])
            if fixed:
                raise click.UsageError(f"cannot change {', '.join(fixed)} when resuming (only steps, device, threads)")
            saved = _read_saved_config(files.config)
            try:
                config = build_config({**saved, **values, "out": str(files.root)})
            except ValueError as error:
                if set(values) & RESUMABLE:
                    raise  # the new value is at fault, not the file
                raise FileProblem(f"{files.config}: not a usable run configuration ({error})") from error
        else:
            # precedence: defaults < preset < config file < command-line flags
            from_file = load_toml(config_file) if config_file else {}
            chosen = {**from_file, **values}
            merged = preset_values(preset, chosen.get("env", "cleanup"), chosen.get("model", "baseline")) if preset else {}
            merged.update(chosen)
            merged["env_kwargs"] = {**from_file.get("env_kwargs", {}), **values.get("env_kwargs", {})}
            config = build_config(merged)
            if not config.out:
                config.out = f"runs/{config.env}-{config.model}-{config.algo}-s{config.seed}"
            if RunFiles(Path(config.out)).checkpoint.exists():
                raise click.BadParameter(
                    f"{config.out} already holds a run; resume it with --resume {config.out} or choose another --out",
                    param_hint="--out")
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--config" if config_file else "options") from error
    _train_with_display(config, resume=bool(resume_dir), quiet=quiet)


def _read_saved_config(path: Path) -> dict:
    """A run's config.json as a dict; FileProblem naming it if it is unreadable or damaged."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FileProblem(f"{path}: cannot read the run's configuration ({error})") from error
    if not isinstance(saved, dict):
        raise FileProblem(f"{path}: not a run configuration (a JSON {type(saved).__name__}, not an object)")
    return saved


def _train_with_display(config, resume: bool, quiet: bool):
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from ..checkpoint import CheckpointError
    from ..rundir import DiskFullError, RunDirError, RunFiles
    from ..train import train
    from ..trajectories import TrajectoryFileError

    console = Console()
    console.print(f"[bold]ssdinfluence run[/]: {config.env}, {config.agents} agents, model {config.model}, "
                  f"{config.algo}, {config.steps:,} steps, {config.num_envs} envs -> {config.out}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = progress.add_task("training", total=config.steps)
    table = Table()

    def render(row):
        table = Table(box=None, show_header=False, padding=(0, 2))
        for _ in range(4):
            table.add_column()
        agents = "  ".join(f"{row.get(f'return_agent_{k}', float('nan')):.1f}" for k in range(config.agents))
        table.add_row("env steps/s", f"{row['sps']:,.0f}", "update", f"{row['update']}")
        table.add_row("collective return", f"{row['collective_return']:.1f}", "episodes", f"{row['episodes']}")
        table.add_row("per-agent returns", agents, "lr", f"{row['lr']:.2e}")
        table.add_row("efficiency / equality", f"{row['efficiency']:.3f} / {row['equality']:.3f}",
                      "sustainability / peace", f"{row['sustainability']:.1f} / {row['peace']:.1f}")
        table.add_row("policy / value loss", f"{row['policy_loss']:.4f} / {row['value_loss']:.4f}",
                      "entropy", f"{row['entropy']:.3f}")
        if "influence_weight" in row:
            exerted = "  ".join(f"{row[f'influence_agent_{k}']:.3f}" for k in range(config.agents))
            table.add_row("influence per agent", exerted, "influence weight", f"{row['influence_weight']:.3f}")
        return table

    def on_update(row):
        progress.update(task, completed=row["env_steps"])
        if quiet:
            if row["update"] % 10 == 0:
                console.print(f"update {row['update']}: {row['env_steps']:,} steps, {row['sps']:,.0f} steps/s, "
                              f"collective return {row['collective_return']:.1f}")
        else:
            live.update(Group(progress, render(row)))

    with console.status("compiling env kernels (cached after the first run)"):
        make(config.env, num_agents=config.agents, **config.env_kwargs).warmup()
    with Live(Group(progress, table), console=console, refresh_per_second=4, transient=False) as live:
        if quiet:
            live.stop()
        try:
            result = train(config, resume=resume, on_update=on_update)
        except (CheckpointError, RunDirError, TrajectoryFileError) as error:
            raise FileProblem(str(error)) from error
        except DiskFullError as error:
            kept = RunFiles(Path(config.out)).checkpoint.exists()
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
    from rich.console import Console
    from rich.table import Table

    from ..checkpoint import CheckpointError
    from ..evaluate import evaluate
    from ..rundir import DiskFullError
    from ..trajectories import TrajectoryFileError

    if record and Path(record).exists() and not overwrite:
        raise click.BadParameter(f"{record} already exists; pass --overwrite to replace it", param_hint="--record")
    try:
        result = evaluate(checkpoint_path, episodes=episodes, num_envs=num_envs, seed=seed, greedy=greedy,
                          device=device, record=record, overwrite=overwrite)
    except CheckpointError as error:
        raise click.BadParameter(str(error), param_hint="CHECKPOINT") from error
    except TrajectoryFileError as error:
        raise FileProblem(str(error)) from error
    except DiskFullError as error:
        raise DiskFull(str(error)) from error
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
    from rich.console import Console
    from rich.table import Table

    if threads is not None:
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
    import torch

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    click.echo(f"ssdinfluence {__version__}")
    click.echo(f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}")
    click.echo(f"device: {device}")
    click.echo(f"numba threads: {numba.get_num_threads()} (threading layer: {numba.config.THREADING_LAYER})")
    for name in ENV_NAMES:
        env = make(name)
        click.echo(f"env {name}: map {env.layout.shape[0]}x{env.layout.shape[1]}, {env.num_actions} actions, "
                   f"up to {len(env.layout.spawn_points)} agents")

