"""ssdinfluence: Sequential Social Dilemmas (Cleanup, Harvest) and social influence, fast."""

from . import threads

threads.set_environment_defaults()  # before Numba or torch start their thread pools: see threads.py

from .envs import ENV_NAMES, BatchedEnv, EnvParams, make  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ENV_NAMES", "BatchedEnv", "EnvParams", "make", "__version__"]
