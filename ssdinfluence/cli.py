"""Command line: ``ssdinfluence rollout``, ``ssdinfluence info``."""

from __future__ import annotations

import time

import click
import numpy as np

from . import __version__
from .envs import ENV_NAMES, make


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssdinfluence")
def main():
    """Sequential Social Dilemmas and social influence for multi-agent RL."""


@main.command()
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


@main.command()
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


if __name__ == "__main__":
    main()
