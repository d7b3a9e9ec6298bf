"""Shared pytest fixtures. `demo_run`, the whole demo (workflow_config/demo.yaml) run to the end,
is made once per pytest run, whatever the number of workers, and only when a selected test asks
for it. Tests only read it (dry runs and reports are fine); a test that reruns jobs works on a
copy (`support.copy_run`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# Under pytest-xdist (pyproject's `-n 2`) each worker is a session of its own: the first to ask
# for `demo_run` makes it while a worker asking later waits for it (a file lock, see
# `shared_run`). So the module that makes it goes first, and the modules that only read it go
# last: the other worker runs the rest of the suite meanwhile instead of waiting.
MAKES_DEMO_RUN = "test_demo_run.py"
READS_DEMO_RUN = {
    "test_incremental.py",
    "test_refetch_workflow.py",
    "test_report.py",
    "test_slurm.py",  # asks for it inside the test, after the cluster check
}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def schedule_rank(nodeid: str) -> int:
    """0: the module making the demo run, 2: the modules reading it, 1: the others."""
    module = module_of(nodeid)
    return 0 if module == MAKES_DEMO_RUN else 2 if module in READS_DEMO_RUN else 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "load":  # another `--dist` asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        """Modules in collection order (pytest_collection_modifyitems), each on one worker (its
        module fixtures built once)."""

        def _split_scope(self, nodeid: str) -> str:
            return module_of(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not the test counts'
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "demo_run" in item.fixturenames and schedule_rank(item.nodeid) == 1:
            raise pytest.UsageError(
                f"{item.nodeid} reads `demo_run`: add its module to READS_DEMO_RUN in "
                "tests/conftest.py (so that it runs after the run is made, not waiting for it)"
            )
    items.sort(key=lambda item: schedule_rank(item.nodeid))  # stable: collection order within


def shared_run(tmp_path_factory, name: str, make) -> tuple[Path, dict]:
    """(directory, record) of a run made once per pytest run by `make(directory)`: under xdist the
    workers share the run's base temporary directory, and the first to take the lock makes it
    while the others wait. `make` returns a JSON-able record (kept beside the directory) that
    tests check, so that a failed run is reported by every worker without being made again."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # <basetemp>/popen-gwN -> <basetemp>, shared by the workers
    directory, record = root / name, root / f"{name}.json"
    with FileLock(f"{record}.lock"):
        if not record.exists():
            directory.mkdir(exist_ok=True)  # a worker's failed attempt left it: go on there
            record.write_text(json.dumps(make(directory)))
    return directory, json.loads(record.read_text())


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
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(workdir, completed process) of the whole demo (workflow_config/demo.yaml) on the real IMHI
    rows, served by a loopback HTTP server (the same download and checksum code as the real
    GitHub URL); made once per pytest run (`shared_run`), read-only."""
    from demo_commands import COMMIT, demo_snakemake
    from support import require_mirror, serve_directory

    mirror = require_mirror()

    def make(workdir: Path) -> dict:
        with serve_directory(mirror) as url:
            source = f"imhi={{commit: {COMMIT}, source: '{url}'}}"
            # 56 jobs: 6 min 18 s on 2 cores beside the other test worker (a whole-suite run)
            done = demo_snakemake(workdir, "--config", source, timeout=2400)
        return {key: getattr(done, key) for key in ("args", "returncode", "stdout", "stderr")}

    workdir, record = shared_run(tmp_path_factory, "demo", make)
    done = subprocess.CompletedProcess(**record)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, done


@pytest.fixture(scope="module")
def finished_demo(demo_run, tmp_path_factory) -> tuple[Path, Path]:
    """(the demo run's workdir, a config on top of demo.yaml naming the local mirror as IMHI
    source) for the tests that run `snakemake` on the finished demo: the run read its rows from
    a loopback server gone since, and another source of the same checksummed files changes
    nothing (test_incremental's `imhi-mirror` case)."""
    from demo_commands import mirror_config

    config = mirror_config(tmp_path_factory.mktemp("finished_demo") / "mirror.yaml", {})
    return demo_run[0], config
