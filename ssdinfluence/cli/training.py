"""Training and playing commands: ``ssdinfluence run | eval | rollout | info``."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import click

from .. import __version__
from ..config import ALGOS, DEVICES, MODELS, PRESETS, RESUMABLE, Config
from ..names import DIVERGENCES, ENV_NAMES, INFLUENCE_SCHEDULES, REWARD_TRANSFORMS
from ..tracking import TRACKERS
from .errors import DiskFull, FileProblem


class StepCount(click.ParamType):
    """A whole number of steps (at least ``minimum``) that may be written as 5e6 or 5_000_000."""

    name = "steps"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            self.fail(f"{value!r} is not a number of steps (e.g. 5000000 or 5e6)", param, ctx)
        if not math.isfinite(number) or number < self.minimum or number != int(number):
            self.fail(f"{value!r} must be a whole number of steps >= {self.minimum}", param, ctx)
        return int(number)


# Help text of the flag of each Config field. The flags themselves are generated from the
# dataclass (config_flags), so a new field gets a flag without anyone adding it here.
FLAG_HELP = {
    "env": "Game.",
    "agents": "Agents per env.",
    "model": "baseline, visible (sees others' previous actions), influence (basic social influence), "
             "moa (influence through a model of other agents), moa-baseline (the MOA as an auxiliary task), "
             "comm (influential communication) or comm-baseline (messages trained on the env reward).",
    "algo": "ppo or a2c.",
    "steps": "Total env steps (all envs together), e.g. 5e6.",
    "num_envs": "Envs stepped together.",
    "seed": "Seed of env, weights and sampling.",
    "device": "auto picks CUDA when available.",
    "out": "Run directory (default: runs/ENV-MODEL-ALGO-sSEED).",
    "rollout_length": "Steps per env between updates.",
    "bptt_length": "Truncated BPTT chunk length.",
    "double_buffer": "Step the envs in two halves, one on the CPU while the GPU acts on the other (large batches on CUDA).",
    "lr": "Initial learning rate.",
    "lr_end": "Final learning rate (linear annealing).",
    "lr_anneal_steps": "Env steps over which lr anneals to lr_end (0: the whole run).",
    "gamma": "Discount factor.",
    "gae_lambda": "GAE lambda.",
    "entropy_coef": "Entropy bonus weight.",
    "value_coef": "Value loss weight.",
    "max_grad_norm": "Clip each agent's gradient to this global norm.",
    "normalise_advantages": "Normalise advantages per agent.",
    "value_huber_delta": "Huber value loss beyond this error (0: squared error).",
    "ppo_epochs": "PPO passes over each rollout.",
    "ppo_minibatches": "PPO minibatches (of BPTT sequences) per pass.",
    "ppo_clip": "PPO clipping range.",
    "target_kl": "Stop an update's minibatches once approx_kl > 1.5 x this (0: never).",
    "reward_transform": "Reward each agent trains on.",
    "prosocial_eta": "prosocial: weight of the others' rewards.",
    "inequity_alpha": "inequity: weight of disadvantageous inequity.",
    "inequity_beta": "inequity: weight of advantageous inequity.",
    "inequity_lambda": "inequity: smoothing of the rewards compared.",
    "log_trajectories": "Env indices whose episodes go to trajectories.h5, e.g. 0,1 ('' for none).",
    "log_every": "Log every k-th episode of those envs.",
    "log_observations": "Also store the 15x15 views.",
    "checkpoint_every": "Updates between checkpoints.",
    "threads": "CPU threads for envs and torch (0: all).",
    "env_kwargs": "Env parameter for ssdinfluence.make (repeatable), e.g. horizon=100 or waste_spawn_mode=\"single\".",
    "influencers": "influence: agents 0..m-1 act first and are rewarded.",
    "influencee_reward": "influence: influencees also get the influence they felt.",
    "divergence": "Influence divergence.",
    "influence_weight": "beta, the influence reward's weight.",
    "extrinsic_weight": "alpha, the env reward's weight.",
    "influence_clip": "Clip the influence reward (0: off).",
    "influence_ramp_steps": "Curriculum: beta ramps up over this many env steps.",
    "influence_schedule": "reference: the reference's piecewise multipliers on top of the ramp.",
    "moa_loss_weight": "moa: weight of the MOA cross-entropy.",
    "moa_visible_only": "moa: train the MOA only on the agents in view.",
    "vocabulary": "comm: number of discrete messages.",
    "comm_entropy_coef": "comm: entropy bonus of the message head.",
    "comm_loss_weight": "comm: loss weight of the message head.",
}
POSITIVE, NON_NEGATIVE = click.IntRange(1), click.IntRange(0)
UNIT = click.FloatRange(0, 1)
WEIGHT = click.FloatRange(min=0)
# Value checks sharper than the field's type; the rest take int, float or str from the default.
FLAG_TYPES = {
    "env": click.Choice(ENV_NAMES), "agents": POSITIVE, "model": click.Choice(MODELS),
    "algo": click.Choice(ALGOS), "steps": StepCount(), "num_envs": POSITIVE, "seed": NON_NEGATIVE,
    "device": click.Choice(DEVICES), "out": click.Path(file_okay=False), "rollout_length": POSITIVE,
    "bptt_length": POSITIVE, "lr": click.FloatRange(min=0, min_open=True), "lr_end": WEIGHT,
    "lr_anneal_steps": StepCount(minimum=0), "gamma": UNIT, "gae_lambda": UNIT, "entropy_coef": WEIGHT,
    "value_coef": WEIGHT, "max_grad_norm": click.FloatRange(min=0, min_open=True), "ppo_epochs": POSITIVE,
    "ppo_minibatches": POSITIVE, "ppo_clip": click.FloatRange(min=0, min_open=True),
    "value_huber_delta": WEIGHT, "target_kl": WEIGHT,
    "reward_transform": click.Choice(REWARD_TRANSFORMS), "prosocial_eta": UNIT, "inequity_alpha": WEIGHT,
    "inequity_beta": WEIGHT, "inequity_lambda": UNIT, "log_every": POSITIVE, "checkpoint_every": POSITIVE,
    "threads": NON_NEGATIVE, "influencers": POSITIVE, "divergence": click.Choice(DIVERGENCES),
    "influence_weight": WEIGHT, "extrinsic_weight": WEIGHT, "influence_clip": WEIGHT,
    "influence_ramp_steps": StepCount(minimum=0), "influence_schedule": click.Choice(INFLUENCE_SCHEDULES),
    "moa_loss_weight": WEIGHT, "vocabulary": click.IntRange(2), "comm_entropy_coef": WEIGHT,
    "comm_loss_weight": WEIGHT,
}


def parse_setting(setting: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (numbers, true/false, "strings"), else a bare string."""
    import tomllib

    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{setting!r} is not KEY=VALUE")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def _env_kwargs(ctx, param, settings):
    return dict(parse_setting(setting) for setting in settings) if settings else None


def config_flags(command):
    """Decorator: one flag per :class:`~ssdinfluence.config.Config` field (``--num-envs`` for
    ``num_envs``, ``--x/--no-x`` for booleans, ``--env-kwargs KEY=VALUE`` for the env table).
    Every flag defaults to None, meaning "not given", so presets and config files apply."""
    defaults = Config()
    for field in reversed(dataclasses.fields(Config)):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = FLAG_HELP.get(field.name, field.name.replace("_", " ") + ".")
        if isinstance(default, bool):
            option = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None,
                                  help=f"{help_text}  [default: {'on' if default else 'off'}]")
        elif isinstance(default, dict):
            option = click.option(flag, field.name, multiple=True, metavar="KEY=VALUE", callback=_env_kwargs,
                                  help=help_text)
        else:
            shown = f"  [default: {default}]" if default != "" else ""
            option = click.option(flag, field.name, type=FLAG_TYPES.get(field.name, type(default)), default=None,
                                  help=help_text + shown)
        command = option(command)
    return command


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
    from ..config import build_config, load_toml, preset_values
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
    from ..tracking import open_tracker
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
        if tracker:
            tracker.log(row)
        progress.update(task, completed=row["env_steps"], eta=_format_duration(eta_seconds(row, config.steps)))
        shown, note = live_rows(row)
        if quiet:
            if row["update"] % 10 == 0:
                console.print(f"update {row['update']}: {row['env_steps']:,} steps, {row['sps']:,.0f} steps/s, "
                              f"collective return {cell(shown['collective_return'], '.1f')} {note}".rstrip())
        else:
            live.update(Group(progress, render(shown, note)))

    try:
        # The lock before the tracker, which writes into the run directory: a refused run leaves
        # nothing there.
        with rundir.locked(config.out) as files:
            tracker = open_tracker(track, config, project=wandb_project)
            try:
                if tracker:
                    console.print(f"tracking: {tracker.description}")
                with console.status("compiling env kernels (cached after the first run)"):
                    make(config.env, num_agents=config.agents, **config.env_kwargs).warmup()
                if quiet:  # no live display at all: one line per 10 updates
                    result = train(config, resume=resume, on_update=on_update, lock_held=True)
                else:
                    with Live(Group(progress, table), console=console, refresh_per_second=4, transient=False) as live:
                        result = train(config, resume=resume, on_update=on_update, lock_held=True)
            finally:
                if tracker:
                    tracker.close()
    except (CheckpointError, rundir.RunDirError, TrajectoryFileError) as error:
        raise FileProblem(str(error)) from error
    except TrainingDiverged as error:
        raise click.ClickException(str(error)) from error
    except rundir.DiskFullError as error:
        kept = files.checkpoint.exists()
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

