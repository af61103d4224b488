"""Flags derived from the fields of :class:`~ssdinfluence.config.Config` and the parameter
types they use: each field's flag, ``--help`` text and value check come from its declared
:class:`~ssdinfluence.options.Option`, so a new field gets its flag without anyone adding it here."""

from __future__ import annotations

import dataclasses
import math

import click

from ..config import Config
from ..options import Option, option_of


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


class FieldNumber(click.ParamType):
    """A number for the Config field ``field``, refused with the message :func:`build_config`
    gives for the same value (``lr must be in (0, 1], got 2.0``)."""

    def __init__(self, field: str, spec: Option):
        self.field, self.spec = field, spec
        self.base = click.INT if spec.kind is int else click.FLOAT
        # "INTEGER RANGE" and "FLOAT RANGE" in --help, as click's own range types show
        self.name = f"{self.base.name} range" if spec.range_text() else self.base.name

    def convert(self, value, param, ctx):
        number = self.base.convert(value, param, ctx)
        try:
            self.spec.check(self.field, number)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        return number


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


def flag_type(name: str, spec: Option) -> click.ParamType | type:
    """The click type of a field's flag (booleans and tables aside)."""
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.steps:
        return StepCount(minimum=spec.low if spec.low is not None else 0)
    if spec.kind in (int, float):
        return FieldNumber(name, spec)
    return click.Path(file_okay=False) if spec.directory else str


def config_flags(command):
    """Decorator: one flag per Config field (``--num-envs`` for ``num_envs``, ``--x/--no-x`` for
    booleans, ``--env-kwargs KEY=VALUE`` for the env table), its help the field's own. Every
    flag defaults to None, meaning "not given", so presets and config files apply."""
    defaults = Config()
    for field in reversed(dataclasses.fields(Config)):
        spec = option_of(field)
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if spec.kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None,
                                  help=f"{spec.help}  [default: {'on' if default else 'off'}]")
        elif spec.kind is dict:
            option = click.option(flag, field.name, multiple=True, metavar="KEY=VALUE", callback=_env_kwargs,
                                  help=spec.help)
        else:
            extra = (f"  [default: {default}]" if default != "" else "") + (
                f"  [{spec.range_text()}]" if spec.range_text() else "")
            option = click.option(flag, field.name, type=flag_type(field.name, spec), default=None,
                                  help=spec.help + extra)
        command = option(command)
    return command
