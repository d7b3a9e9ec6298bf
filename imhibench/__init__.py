"""imhi-bench: a reproducible IMHI mental-health benchmark pipeline (non-clinical research only)."""

__version__ = "0.1.0"
