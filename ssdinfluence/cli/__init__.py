"""Command line: ``ssdinfluence COMMAND``; each group of commands lives in its own module.

* :mod:`.training`: ``run``, ``eval``, ``rollout``, ``info``
* :mod:`.sweep`: ``sweep``
* :mod:`.render`: ``render``
* :mod:`.analysis`: ``analyze``, ``plot``, ``compare``, ``report``
"""

from __future__ import annotations

import click

from .. import __version__
from .analysis import analyze, compare, plot, report
from .render import render
from .sweep import sweep
from .training import eval_command, info, rollout, run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssdinfluence")
def main():
    """Sequential Social Dilemmas and social influence for multi-agent RL."""


for command in (run, eval_command, rollout, info, render, analyze, plot, compare, sweep, report):
    main.add_command(command)
