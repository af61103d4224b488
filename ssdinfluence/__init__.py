"""ssdinfluence: Sequential Social Dilemmas (Cleanup, Harvest) and social influence, fast.

The public names load on first use (``ssdinfluence.make`` compiles nothing until called), so
``import ssdinfluence`` and the command line's ``--help`` stay fast. Importing the package also
registers ``ssdinfluence/cleanup-v0`` and ``ssdinfluence/harvest-v0`` with PettingZoo's registry
when PettingZoo >= 1.27 is installed (see :mod:`ssdinfluence.registration`).
"""

from . import threads

threads.set_environment_defaults()  # before Numba or torch start their thread pools: see threads.py

from . import registration  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ENV_NAMES", "BatchedEnv", "EnvParams", "make", "make_vec", "__version__"]

# public name -> the module that defines it
_LAZY = {"ENV_NAMES": "names", "BatchedEnv": "envs", "EnvParams": "envs", "make": "envs", "make_vec": "vector"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ssdinfluence' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


registration.register_with_pettingzoo()
