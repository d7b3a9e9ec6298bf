"""Stage 1, on the login node: IMHI test sets, model checkpoints, scorer weights."""
