"""Stage 4: correctness and explanation metrics of each (model, dataset)."""
