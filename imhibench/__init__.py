"""imhi-bench: a reproducible pipeline for the IMHI mental-health benchmark (non-clinical research only)."""

__version__ = "0.1.0"
