"""ssdinfluence: Sequential Social Dilemmas (Cleanup, Harvest) and social influence, fast."""

from .envs import ENV_NAMES, BatchedEnv, EnvParams, make

__version__ = "0.1.0"
__all__ = ["ENV_NAMES", "BatchedEnv", "EnvParams", "make", "__version__"]
