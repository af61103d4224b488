"""Command line: ``ssdinfluence COMMAND``; each group of commands lives in its own module.

* :mod:`.training`: ``run``, ``eval``, ``rollout``, ``info``
* :mod:`.sweep`: ``sweep``, ``pack``
* :mod:`.render`: ``render``
* :mod:`.analysis`: ``analyze``, ``plot``, ``compare``, ``report``

:mod:`.flags` makes the flags of ``run`` from the fields of :class:`~ssdinfluence.config.Config`.
"""

from __future__ import annotations

import click

from .. import __version__
from ..rundir import DiskFullError
from .analysis import analyze, compare, plot, report
from .errors import FileProblem
from .render import render
from .sweep import pack, sweep
from .training import eval_command, info, rollout, run


class _Commands(click.Group):
    """The command group; a full disk under any command that writes a file the user named (a
    plot, a video, an episode log) is reported as "no space left on device: PATH", exit code 2
    (``run`` reports its own, with how to resume)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DiskFullError as error:
            raise FileProblem(str(error)) from error


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssdinfluence")
def main():
    """Sequential Social Dilemmas and social influence for multi-agent RL."""


for command in (run, eval_command, rollout, info, render, analyze, plot, compare, sweep, pack, report):
    main.add_command(command)
