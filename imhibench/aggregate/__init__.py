"""Stage 5: the paper's tables, plots, answer samples and the report's screenshot."""

from imhibench.common.moved import forward_old_names

# The names of the old module imhibench.aggregate, for one release.
__getattr__ = forward_old_names(__name__, ("specs", "notes", "build", "write"))
