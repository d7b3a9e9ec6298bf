"""The reuse store of the per-model label and score jobs: finished per-dataset results kept
outside the jobs' output directories, each under a key over everything that determines it.

Snakemake deletes a ``directory()`` output before its job runs, so a model's label or score
job that reruns (a dataset added, ``--forcerun``, a failure at its seventh dataset) would
otherwise recompute every dataset. The job asks the store first: an entry whose key matches is
copied (byte for byte) into the output directory, any other dataset is computed and put in the
store as soon as it is done. Layout: ``<root>/<dataset>/<key>/<file>``, one entry per
(model, dataset) kept; deleting the store is safe and only costs recomputation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Where the per-model jobs keep their finished per-dataset results (docs/outputs.md).
REUSE_ROOT = "results/.reuse"


def sources_sha256(files: Iterable[Path]) -> str:
    """sha256 over the names and contents of source files, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def common_sources() -> list[Path]:
    """The shared sources that shape every stage's files (Parquet writing, provenance, the
    tasks as data), part of each stage's code sha256."""
    here = Path(__file__).parent
    return [*sorted(here.glob("*.py")), here / "data" / "tasks.yaml"]


def key_sha256(record: dict) -> str:
    """The key of an entry: sha256 of ``record`` as sorted JSON."""
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_versions(code_sha256: str) -> dict:
    """The part of a key that names the code: the package version, the versions of the
    libraries recorded in provenance (the workflow engine's left out: it computes nothing),
    and the sha256 of the stage's own sources."""
    import imhibench
    from imhibench.common.provenance import package_versions

    packages = {k: v for k, v in package_versions().items() if k != "snakemake"}
    return {
        "imhibench_version": imhibench.__version__,
        "packages": packages,
        "code_sha256": code_sha256,
    }


class ReuseStore:
    """Finished results of one (stage, model) job by dataset, each entry a folder of files
    named as the job's outputs of that dataset."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, dataset: str, key: str) -> Path:
        return self.root / dataset / key

    def fetch(self, dataset: str, key: str, outputs: dict[str, str | Path]) -> bool:
        """Copy the entry ``key`` of ``dataset`` to ``outputs`` (file name in the entry ->
        destination); False (nothing copied) when there is no complete entry under that key."""
        entry = self.entry(dataset, key)
        if not all((entry / name).is_file() for name in outputs):
            return False
        for name, destination in outputs.items():
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(destination).with_name(f".{Path(destination).name}.tmp-{os.getpid()}")
            shutil.copyfile(entry / name, tmp)
            os.replace(tmp, destination)
        return True

    def put(
        self, dataset: str, key: str, write: Callable[[Path], None], names: Iterable[str]
    ) -> Path:
        """Run ``write(folder)``, which writes the files ``names`` into an empty folder, and
        make that folder the entry ``key`` of ``dataset`` in one rename; older entries of the
        dataset (and leftovers of interrupted writes) are then removed."""
        dataset_dir = self.root / dataset
        dataset_dir.mkdir(parents=True, exist_ok=True)
        tmp = dataset_dir / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            write(tmp)
            missing = [name for name in names if not (tmp / name).is_file()]
            if missing:
                raise RuntimeError(f"reuse store: {tmp} lacks {missing} after writing")
            entry = self.entry(dataset, key)
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for other in dataset_dir.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
        return entry
