"""Where the pipeline fetches from: IMHI files (upstream at the pinned commit, a mirror, a local
directory), rating files, the user's own test files."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlparse

from imhibench.config.paths import IMHI_ROOT

UPSTREAM_REPO = "https://raw.githubusercontent.com/SteveKGYang/MentalLLaMA"
# imhi.source keyword (as null): GitHub raw files at imhi.commit.
UPSTREAM_SOURCE = "upstream"


def source_url(base: str, relative_path: str) -> str:
    """The URL of `relative_path` under `base`: an http(s)/file URL or a local directory."""
    if urlparse(base).scheme in ("http", "https", "file"):
        return f"{base.rstrip('/')}/{quote(relative_path)}"
    return (Path(base).resolve() / relative_path).as_uri()


class SourcesPlan:
    """Plan methods: the source URL or path of every fetched file."""

    def imhi_file_source(self, relative_path: str) -> str:
        """URL of an upstream IMHI file: under imhi.source, or GitHub at imhi.commit when the
        source is null or `upstream`. Every IMHI file (test sets, example answers) uses it."""
        base = self.config["imhi"]["source"]
        if base in (None, UPSTREAM_SOURCE):
            base = f"{UPSTREAM_REPO}/{self.config['imhi']['commit']}"
        return source_url(base, relative_path)

    def example_responses_source(self, dataset: str) -> str:
        """URL of the upstream example answers for `dataset` (key imhi_example_responses)."""
        return self.imhi_file_source(self.config["imhi_example_responses"][dataset]["path"])

    def rating_files(self) -> dict[str, dict]:
        """Upstream's human-rating files the metric validation reads (name -> path, sha256);
        empty when the stage is off. A file set to null (by a config file on top) is left out."""
        ratings = self.config["metric_validation"]["ratings"]
        return {name: spec for name, spec in ratings.items() if spec is not None}

    def rating_file_source(self, name: str) -> str:
        """URL of one human-rating file (metric_validation.ratings.<name>)."""
        return self.imhi_file_source(self.rating_files()[name]["path"])

    def test_file(self, dataset: str, split: str) -> dict:
        return self.dataset(dataset)["files"][split]

    def test_file_source(self, dataset: str, split: str) -> str:
        """URL (or local path) of a test file: upstream/mirror path, or the user's own file."""
        spec = self.test_file(dataset, split)
        if "local_path" in spec:
            return spec["local_path"]
        return self.imhi_file_source(spec["path"])

    def test_set_path(self, dataset: str, split: str, ext: str = "parquet") -> str:
        return f"{IMHI_ROOT}/{split}/{dataset}.{ext}"

    def needed_test_sets(self) -> list[tuple[str, str]]:
        return sorted({(d, self.split_of(m)) for m, d in self.jobs})
