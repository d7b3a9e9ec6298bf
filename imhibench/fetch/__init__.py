"""Stage 1, on the login node: IMHI test sets, model checkpoints, scorer weights."""

from imhibench.common.moved import forward_old_names

# The names of the old module imhibench.fetch, for one release.
__getattr__ = forward_old_names(__name__, ("test_sets", "checkpoints", "scorer_weights"))
