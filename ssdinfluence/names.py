"""The names a configuration may use, in one torch-free place (``config``, the CLI and sweep
expansion import them without loading torch)."""

from __future__ import annotations

# Config.model: each name has its policy class in ``policies.POLICIES``.
MODELS = ("baseline", "visible", "influence", "moa", "moa-baseline", "comm", "comm-baseline")
# Config.divergence: how influence compares the outcome at the actual value with the marginal.
DIVERGENCES = ("kl", "jsd", "pmi")
