"""Names of the choices the package offers, in a module that imports nothing.

``config``, the command line (its flags come from these and from
:class:`~ssdinfluence.config.Config`) and sweep expansion read them without loading torch or
the Numba kernels, so ``ssdinfluence --help`` stays fast.
"""

ENV_NAMES = ("cleanup", "harvest")
# Config.model: each name has its policy class in ``policies.POLICIES``.
MODELS = ("baseline", "visible", "influence", "moa", "moa-baseline", "comm", "comm-baseline")
# Config.divergence: how influence compares the outcome at the actual value with the marginal.
DIVERGENCES = ("kl", "jsd", "pmi")
INFLUENCE_SCHEDULES = ("linear", "reference")
REWARD_TRANSFORMS = ("none", "collective", "prosocial", "inequity")
