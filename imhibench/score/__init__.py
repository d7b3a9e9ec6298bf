"""Stage 4: correctness and explanation metrics of each (model, dataset)."""

from imhibench.common.moved import forward_old_names

# The names of the old module imhibench.score, for one release.
__getattr__ = forward_old_names(__name__, ("stage",))
