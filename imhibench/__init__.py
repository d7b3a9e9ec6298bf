"""imhi-bench: a reproducible IMHI mental-health benchmark pipeline (non-clinical research only)."""

__version__ = "0.1.0"

from imhibench.common import moved as _moved

_moved.install()  # the old module names keep working for one release
