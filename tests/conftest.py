"""Shared pytest fixtures. The end-to-end runs are session fixtures, each run at most once per
session and only when a selected test asks for it: `demo_run` (workflow_config/demo.yaml) and
`small_demo` (tests/small_demo.py). Tests only read them (dry runs and reports are fine); a test
that reruns jobs works on a copy (`support.copy_run`)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Under pytest-xdist (pyproject's `-n 2`) each worker is a session: a session run (`demo_run`,
# `small_demo`) is made once per worker that asks for it. So the modules reading one are sent
# to one worker, as one unit; any other module is a unit of its own (its module fixtures built
# once). The shared runs' units go first: they are the longest, one on each worker.
SHARED_RUN_OF_MODULE = {
    "test_demo_run.py": "demo_run",
    "test_incremental.py": "small_demo",
    "test_refetch_workflow.py": "small_demo",
    "test_report.py": "small_demo",
    "test_slurm.py": "demo_run",  # asks for it inside the test, after the cluster check
}


def scheduling_unit(nodeid: str) -> str:
    """The shared run a test's module reads, else the module."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return SHARED_RUN_OF_MODULE.get(module, module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "load":  # another `--dist` asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        """Units in collection order (pytest_collection_modifyitems), each on one worker."""

        def _split_scope(self, nodeid: str) -> str:
            return scheduling_unit(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not the test counts'
    return SharedRunScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in ("demo_run", "small_demo"):
            if fixture in item.fixturenames and scheduling_unit(item.nodeid) != fixture:
                raise pytest.UsageError(
                    f"{item.nodeid} reads `{fixture}`: add its module to "
                    "SHARED_RUN_OF_MODULE in tests/conftest.py (or each worker makes the run)"
                )
    # shared runs first, the rest in their order (a stable sort)
    items.sort(key=lambda item: scheduling_unit(item.nodeid) not in SHARED_RUN_OF_MODULE.values())


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, str]:
    """Tiny demo checkpoints (name -> dir), built once per session; a classifier per task."""
    from imhibench.common.tasks import all_tasks
    from imhibench.demo_models import build_demo_models

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


@pytest.fixture(scope="session")
def served_demo_llama(tmp_path_factory):
    """A real OpenAI-compatible server: `transformers serve` with the demo's tiny LLaMA (the
    weights the workflow's build_demo_models builds, with the workflow seed), on CPU, once per
    session. Yields `transformers_serve.Served`: `.base_url` (…/v1, no API key), `.model` (the
    name requests must give) and `.requests(path)` (a count from the access log). Skipped, with
    the reason, without the transformers[serving] extra. Any test that needs a real server (the
    API models, an LLM judge's chat backend) can take this fixture."""
    import yaml
    from support import REPO
    from transformers_serve import require_serving, served

    from imhibench.demo_models import build_demo_models

    require_serving()
    seed = yaml.safe_load((REPO / "workflow_config" / "config.yaml").read_text())["seed"]
    models = build_demo_models(tmp_path_factory.mktemp("served_models"), {}, seed=seed)
    log = tmp_path_factory.mktemp("served_log") / "transformers-serve.log"
    with served(Path(models["causal"]), log) as server:
        yield server


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(workdir, completed process) of the whole demo (workflow_config/demo.yaml) on the real IMHI
    rows, served by a loopback HTTP server (the same download and checksum code as the real
    GitHub URL); run once per session, read-only."""
    from small_demo import COMMIT, demo_snakemake
    from support import require_mirror, serve_directory

    mirror = require_mirror()
    workdir = tmp_path_factory.mktemp("demo")
    with serve_directory(mirror) as url:
        source = f"imhi={{commit: {COMMIT}, source: '{url}'}}"
        # 56 jobs: 6 min 18 s on 2 cores beside the other test worker (a whole-suite run)
        done = demo_snakemake(workdir, "--config", source, timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, done


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, config) of the small demo (tests/small_demo.py), run once per session; tests
    must not change the workdir."""
    from small_demo import run_small_demo

    workdir = tmp_path_factory.mktemp("small_demo")
    return workdir, run_small_demo(workdir, tmp_path_factory.mktemp("small_config"))
