"""Options declared on dataclass fields: type, default, help, choices and bounds in one place.

A field declared with :func:`option` carries an :class:`Option` in its metadata. Everything
else about the field is derived from it: the command line's flag and ``--help`` text
(``ssdinfluence.cli.flags``), the conversion and checks of a value (:meth:`Option.convert`,
:meth:`Option.check`, used by :func:`~ssdinfluence.config.build_config` and
:func:`~ssdinfluence.config.validate`) and the tables of docs/training.md (``docs/generate.py``).

Standard library only: the command line reads this before ``--help`` without loading numpy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

_TYPE_ERRORS = {bool: "must be true or false", int: "must be an integer", float: "must be a number",
                str: "must be a string", dict: "must be a table"}


@dataclass(frozen=True)
class Option:
    """What a field accepts. ``kind``: its type (bool, int, float, str or dict); ``choices``: the
    only strings it takes; ``low``/``high``: its bounds (open with ``low_open``/``high_open``);
    ``limit``: an upper guard against numbers that overflow the training (not part of the field's
    meaning, so it has its own message); ``steps``: a count of env steps (its flag takes 5e6);
    ``directory``: a directory path (its flag refuses an existing file)."""

    help: str
    kind: type
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    limit: float | None = None
    steps: bool = False
    directory: bool = False

    def normalise(self, value):
        """A whole-number float becomes an int for an integer option (TOML and JSON write 3e7 as a
        float); any other value comes back as it is, for :meth:`convert` to judge."""
        if self.kind is int and isinstance(value, float) and value.is_integer():  # False for nan and inf
            return int(value)
        return value

    def convert(self, name: str, value):
        """``value`` (from TOML, JSON or a dict) as the field stores it: whole-number floats as ints
        for an integer option, ints as floats for a float option; ValueError naming ``name`` if it
        has the wrong type. Bounds and choices are :meth:`check`'s."""
        value = self.normalise(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ValueError(f"{name} must be a finite number, got {value}") from None
        self._check_type(name, value)
        return value

    def check(self, name: str, value) -> None:
        """ValueError naming ``name`` unless ``value`` has this option's type, is finite (a float),
        one of its choices, within its bounds and its limit."""
        self._check_type(name, value)
        if isinstance(value, float) and not math.isfinite(value):  # nan and inf pass comparisons like >= 0
            raise ValueError(f"{name} must be a finite number, got {value}")
        if self.choices and value not in self.choices:
            raise ValueError(f"unknown {name} {value!r}; available: {', '.join(self.choices)}")
        if self.limit is not None and value > self.limit:  # before the bounds: the limit says why
            raise ValueError(f"{name} must be <= {self.limit:g}, got {value}")
        if not self.within(value):
            raise ValueError(f"{name} must be {self.bounds_text()}, got {value}")

    def within(self, value) -> bool:
        """Whether a number of the right type is within the bounds (the limit aside)."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def bounds_text(self) -> str:
        """The bounds as an error message states them: ``>= 1``, ``in (0, 1]``, ``in 0..2**63 - 1``."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            if self.kind is int and not (self.low_open or self.high_open):
                return f"in {low}..{high}"
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}" if self.high is not None else ""

    def range_text(self) -> str:
        """The accepted numbers as ``--help`` shows a range (``x>=1``, ``0<x<=1``, ``0<=x<=10000``
        with the limit), or "" for an option without bounds."""
        high, high_open = self.high, self.high_open
        if self.limit is not None and (high is None or self.limit < high):
            high, high_open = self.limit, False
        left = "" if self.low is None else f"{_number(self.low)}{'<' if self.low_open else '<='}"
        right = "" if high is None else f"{'<' if high_open else '<='}{_number(high)}"
        if not left and not right:
            return ""
        if not left:
            return f"x{right}"
        if not right:
            return f"x{'>' if self.low_open else '>='}{_number(self.low)}"
        return f"{left}x{right}"

    def _check_type(self, name: str, value) -> None:
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind in (int, float):  # bool is an int to Python, not to a config
            ok = isinstance(value, int if self.kind is int else (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise ValueError(f"{name} {_TYPE_ERRORS[self.kind]}, got {value!r}")


def option(default, help: str, *, choices: tuple[str, ...] = (), low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           limit: float | None = None, steps: bool = False, directory: bool = False):
    """A dataclass field with ``default`` and its :class:`Option` (the type is the default's;
    a dict default is copied for each instance). ValueError for a declaration that contradicts
    itself, so a mistake shows at import."""
    kind = type(default)
    if kind not in _TYPE_ERRORS:
        raise ValueError(f"an option's default must be a bool, int, float, str or dict, got {default!r}")
    if not help.strip():
        raise ValueError(f"an option needs help text (default {default!r})")
    if (choices and kind is not str) or (steps and kind is not int) or (directory and kind is not str):
        raise ValueError(f"choices and directory need a str default, steps an int one; got {default!r}")
    spec = Option(help=help, kind=kind, choices=tuple(choices), low=low, high=high, low_open=low_open,
                  high_open=high_open, limit=limit, steps=steps, directory=directory)
    if kind is not dict:
        spec.check("default", default)  # a default outside its own bounds or choices
    metadata = {"option": spec}
    if kind is dict:
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_of(field: dataclasses.Field) -> Option:
    """The :class:`Option` of a field declared with :func:`option`; LookupError for another."""
    try:
        return field.metadata["option"]
    except KeyError:
        raise LookupError(f"field {field.name!r} is not declared with option(): it has no help, flag or "
                          f"checks") from None


def _number(x) -> str:
    """A bound as text: 2**63 - 1 rather than 19 digits, 1e-05 as Python writes it."""
    if x is None:
        return ""
    if isinstance(x, int) and x >= 2**32 and (x + 1) & x == 0:
        return f"2**{x.bit_length()} - 1"
    return f"{x:g}" if isinstance(x, float) else str(x)
