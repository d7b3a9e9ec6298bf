"""Stage 5: the paper's tables, plots, answer samples and the report's screenshot."""
