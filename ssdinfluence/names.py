"""Names of the choices the package offers, in a module that imports nothing.

The command line builds its flags from these (and from :class:`~ssdinfluence.config.Config`)
without loading the Numba kernels or torch, so ``ssdinfluence --help`` stays fast.
"""

ENV_NAMES = ("cleanup", "harvest")
DIVERGENCES = ("kl", "jsd", "pmi")
INFLUENCE_SCHEDULES = ("linear", "reference")
REWARD_TRANSFORMS = ("none", "collective", "prosocial", "inequity")
