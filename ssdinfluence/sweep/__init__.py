"""Multi-seed sweeps: a spec expands to trials, each a normal training run, run in parallel.

A spec (:class:`SweepSpec`, from a TOML file or built in code) holds base options (any
:class:`~ssdinfluence.config.Config` field), grid axes (cartesian product), random axes
(``samples`` draws from a seeded RNG, so expansion is deterministic) and seeds. Every trial's
values are checked with :func:`~ssdinfluence.config.build_config` before anything runs.

Sweep directory::

    SWEEP_DIR/sweep.json      the spec of the first run, as given
    SWEEP_DIR/manifest.json   one record per trial (see :func:`load_manifest`)
    SWEEP_DIR/runs/<id>/      the trial's run directory (config.json, metrics.csv, checkpoint.pt, ...)

Only the driver (the process calling :func:`run_sweep`) writes the manifest, atomically, as
trials report. Re-running the same spec into the same directory skips finished trials and
resumes the others from their checkpoints (failed ones are tried again); a different spec is
refused. Backends: ``local`` (a pool of spawned processes on this machine) and ``ray`` (tasks
on a Ray cluster; the sweep directory must then be on a filesystem every node mounts at the
same path, and ssdinfluence installed on every node).

Modules: :mod:`.spec` (the spec and its expansion into trials), :mod:`.manifest` (the trial
records), :mod:`.backends` (local and Ray), :mod:`.driver` (:func:`run_sweep`). The public
names are all importable from ``ssdinfluence.sweep``.
"""

from .backends import ERROR_CHARS, import_ray, run_trial
from .driver import run_sweep
from .manifest import MANIFEST_FORMAT, MANIFEST_VERSION, STATUSES, load_manifest, plan, trial_run_dirs
from .spec import RESERVED, SPEC_KEYS, SweepSpec, Trial, expand, load_spec, read_spec

__all__ = ["ERROR_CHARS", "MANIFEST_FORMAT", "MANIFEST_VERSION", "RESERVED", "SPEC_KEYS", "STATUSES", "SweepSpec",
           "Trial", "expand", "import_ray", "load_manifest", "load_spec", "plan", "read_spec", "run_sweep",
           "run_trial", "trial_run_dirs"]
