"""Run tracking: every update's metrics row to TensorBoard or Weights & Biases.

A tracker is fed through the trainer's ``on_update(row)`` hook, so it sees exactly the rows
that go to ``metrics.csv``::

    tracker = open_tracker("tensorboard", config)          # or "wandb", or "none" -> None
    train(config, on_update=tracker.log)
    tracker.close()

Both back ends are optional extras, imported only here and only when asked for
(``pip install "ssdinfluence[tensorboard]"`` / ``"ssdinfluence[wandb]"``). The x axis is env
steps. Episode columns are NaN in updates where no episode ended; those values are left out
rather than logged as NaN. Tags are grouped: ``episode/`` (returns and social outcomes),
``losses/``, ``influence/``, ``charts/`` (throughput, learning rate, timers).

* TensorBoard: event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs/``).
* W&B: project ``project``, run name = the run directory's name, run id kept in
  ``RUN_DIR/wandb_id`` so that a resumed run continues the same W&B run. Mode: ``WANDB_MODE``
  when set, else online when an API key is configured and the W&B server answers within a few
  seconds, else offline (files in ``RUN_DIR/wandb``; upload later with ``wandb sync``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

TRACKERS = ("none", "tensorboard", "wandb")
_LOSSES = {"entropy", "approx_kl", "clip_fraction", "grad_norm", "message_entropy", "moa_accuracy"}
_CHARTS = {"sps", "lr", "episodes"}


def tag(column: str) -> str:
    """The grouped tag of a ``metrics.csv`` column, e.g. ``episode/collective_return``."""
    if column.startswith("influence"):
        return f"influence/{column}"
    if column.endswith("_loss") or column in _LOSSES:
        return f"losses/{column}"
    if column in _CHARTS or column.endswith("_s"):
        return f"charts/{column}"
    return f"episode/{column}"


def scalars(row: dict) -> dict[str, float]:
    """The finite numbers of a metrics row under their tags (``update`` and ``env_steps`` are the axes)."""
    return {tag(key): float(value) for key, value in row.items()
            if key not in ("update", "env_steps") and isinstance(value, int | float)
            and not isinstance(value, bool) and math.isfinite(value)}


# tracker -> (module it needs, extra that installs it)
_EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_installed(kind: str) -> None:
    """ImportError naming the pip install when the tracker's package is missing (imports nothing)."""
    import importlib.util

    if kind == "none":
        return
    if kind not in _EXTRAS:
        raise ValueError(f"unknown tracker {kind!r}; choose from {', '.join(TRACKERS)}")
    module, extra = _EXTRAS[kind]
    if importlib.util.find_spec(module) is None:
        raise ImportError(f'--track {kind} needs the {module} package: pip install "ssdinfluence[{extra}]"')


def open_tracker(kind: str, config, *, project: str = "ssdinfluence"):
    """A tracker for the run of ``config`` (its ``out`` directory must be set), or None for
    ``"none"``. ValueError for an unknown kind; ImportError naming the pip install for a
    missing extra."""
    check_installed(kind)
    if kind == "none":
        return None
    Path(config.out).mkdir(parents=True, exist_ok=True)  # before the trainer makes it
    if kind == "tensorboard":
        return TensorBoardTracker(Path(config.out), config.to_dict())
    if kind == "wandb":
        return WandbTracker(Path(config.out), config.to_dict(), project)


class TensorBoardTracker:
    """Scalars of every update in ``run_dir/tensorboard``; the config as a text summary."""

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```")
        self.description = f"TensorBoard events in {self.log_dir}"

    def log(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, global_step=row["env_steps"])

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per run directory, resumed with it."""

    def __init__(self, run_dir: Path, config: dict, project: str):
        import secrets

        import wandb

        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self.mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_reachable() else "offline")
        self.run = wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
                              config=config, mode=self.mode, settings=wandb.Settings(console="off", silent=True))
        where = f"project {project}" if self.mode == "online" else \
            f"{run_dir / 'wandb'} (offline: upload with `wandb sync {run_dir / 'wandb'}/offline-run-*`)"
        self.description = f"W&B run {run_id} in {where}"

    def log(self, row: dict) -> None:
        self.run.log(scalars(row), step=row["env_steps"])

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before W&B's service has written the run's data; teardown waits for
        # it (its own atexit hook is not reliable in sweep workers, which run many trials each)
        wandb.teardown()


def _wandb_reachable(timeout: float = 3.0) -> bool:
    """An API key is configured and the W&B server accepts a connection."""
    import netrc
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    port = url.port or (80 if url.scheme == "http" else 443)
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            key = (netrc.netrc().authenticators(host) or (None, None, None))[2]
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        return False
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True
