"""What every stage shares: errors, Parquet I/O with provenance, logs, devices, progress
lines, the tasks as data and the table model with its four formats."""
