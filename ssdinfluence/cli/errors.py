"""Errors the commands report without a traceback."""

from __future__ import annotations

import click


class FileProblem(click.ClickException):
    """A file that cannot be used (damaged, foreign, held by another process): exit code 2,
    as for any other bad input, with a message naming the file and what is wrong."""

    exit_code = 2


class DiskFull(click.ClickException):
    """The disk filled up (exit code 1: the input was fine); the message names the file."""

    exit_code = 1
