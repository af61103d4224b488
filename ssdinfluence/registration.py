"""The PettingZoo ids ``ssdinfluence/cleanup-v0`` and ``ssdinfluence/harvest-v0``.

PettingZoo 1.27 added a registry (``pettingzoo.register`` / ``pettingzoo.make``)::

    import ssdinfluence, pettingzoo
    env = pettingzoo.make("parallel", "ssdinfluence/cleanup-v0", num_agents=5, horizon=1000)

``import ssdinfluence`` registers both ids without importing PettingZoo itself (0.4 s, which
the command line must not pay): if PettingZoo is already imported the ids are registered at
once, otherwise a hook registers them the moment PettingZoo's own import finishes, in
whichever order the two packages are imported. The entry points are strings, so registering
loads neither the kernels nor gymnasium. Older PettingZoo has no registry; there
:func:`ssdinfluence.pettingzoo_env.make_parallel` takes the same ids.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

# PettingZoo env id -> "module:class" that builds it
ENV_IDS = {
    "ssdinfluence/cleanup-v0": "ssdinfluence.pettingzoo_env:CleanupParallelEnv",
    "ssdinfluence/harvest-v0": "ssdinfluence.pettingzoo_env:HarvestParallelEnv",
}


def register_pettingzoo_envs() -> bool:
    """Register the ids with the imported PettingZoo; False when it has no registry (< 1.27)."""
    import pettingzoo

    register = getattr(pettingzoo, "register", None)
    registry = getattr(pettingzoo, "parallel_registry", None)
    if register is None or registry is None:
        return False
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in registry:  # registering twice would warn about overriding
            register("parallel", env_id, entry_point=entry_point)
    return True


def register_with_pettingzoo() -> None:
    """Register now if PettingZoo is imported, else as soon as it is (nothing if not installed)."""
    if "pettingzoo" in sys.modules:
        _register_quietly()
    elif not any(isinstance(finder, _AfterPettingZooImport) for finder in sys.meta_path) \
            and importlib.util.find_spec("pettingzoo") is not None:
        sys.meta_path.insert(0, _AfterPettingZooImport())


def _register_quietly() -> None:
    try:
        register_pettingzoo_envs()
    except Exception as error:  # a broken PettingZoo must not break importing either package
        warnings.warn(f"could not register the ssdinfluence envs with PettingZoo: {error}", stacklevel=2)


class _AfterPettingZooImport(importlib.abc.MetaPathFinder):
    """Finds ``pettingzoo`` with the normal finders, then wraps its loader so that the ids are
    registered right after the package's own code has run. Removes itself on first use."""

    def find_spec(self, name, path=None, target=None):
        if name != "pettingzoo":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register_quietly()

    def __getattr__(self, name):  # everything else (get_resource_reader, is_package, ...) as the real loader
        return getattr(self.loader, name)
