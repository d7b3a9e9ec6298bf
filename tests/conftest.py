"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, str]:
    """Tiny demo checkpoints (name -> dir), built once per session; a classifier per task."""
    from imhibench.demo_models import build_demo_models
    from imhibench.tasks import all_tasks

    labels = {name: list(task.classifier_labels) for name, task in all_tasks().items()}
    return build_demo_models(tmp_path_factory.mktemp("demo_models"), labels, seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; many threads spin when the CPUs are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
