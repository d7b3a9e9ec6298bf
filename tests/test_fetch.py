import hashlib
import http.server
import threading

import pandas as pd
import pytest
from support import mirror_sha256, require_mirror, serve_directory

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table
from imhibench.config.sources import source_url
from imhibench.fetch.test_sets import (
    TEST_SET_COLUMNS,
    download,
    prepare_test_set,
    read_test_csv,
    run_fetch_test_set,
)

DR = "test_data/test_instruction/DR.csv"


@pytest.mark.parametrize("kind", ["path", "file_url", "http"])
def test_download_verifies_sha256_from_every_source_kind(tmp_path, kind):
    mirror = require_mirror()
    sha = mirror_sha256(DR)
    dest = tmp_path / "DR.csv"
    if kind == "http":
        with serve_directory(mirror) as base:
            assert download(source_url(base, DR), dest, sha) == sha
    else:
        base = str(mirror) if kind == "path" else mirror.as_uri()
        assert download(source_url(base, DR), dest, sha) == sha
    assert dest.read_bytes() == (mirror / DR).read_bytes()


def test_wrong_sha256_stops_fetch_and_writes_nothing(tmp_path):
    mirror = require_mirror()
    dest = tmp_path / "DR.csv"
    with pytest.raises(ImhiBenchError, match="sha256 mismatch.*DR.csv"):
        download(source_url(str(mirror), DR), dest, "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_404_names_the_url(tmp_path):
    with (
        serve_directory(tmp_path) as base,
        pytest.raises(ImhiBenchError, match="nope.csv failed: HTTP 404"),
    ):
        download(f"{base}/nope.csv", tmp_path / "x.csv", None, retries=1)


def test_http_server_errors_are_retried(tmp_path):
    calls = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            calls.append(self.path)
            if len(calls) == 1:
                self.send_error(503)
                return
            body = b"query,gpt-3.5-turbo\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.csv"
        download(url, tmp_path / "f.csv", None, retries=2)
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 2
    assert (tmp_path / "f.csv").read_bytes() == b"query,gpt-3.5-turbo\n"


def test_run_fetch_writes_parquet_with_row_ids_and_provenance(tmp_path):
    mirror = require_mirror()
    csv, parquet = tmp_path / "DR.csv", tmp_path / "DR.parquet"
    with serve_directory(mirror) as base:
        run_fetch_test_set(
            source_url(base, DR), mirror_sha256(DR), "DR", "DR", "instruction", csv, parquet
        )
    table = read_table(parquet)
    assert list(table.columns) == TEST_SET_COLUMNS
    assert len(table) == 405
    assert table["row_id"].iloc[0] == "DR-00000" and table["row_id"].iloc[-1] == "DR-00404"
    assert table["row_id"].is_unique
    assert table["gold_label"].value_counts().to_dict() == {"yes": 307, "no": 98}
    provenance = read_provenance(parquet)
    assert provenance["sha256"] == mirror_sha256(DR) and provenance["sha256_pinned"]
    assert provenance["stage"] == "fetch" and "packages" in provenance


def test_row_ids_align_across_splits():
    mirror = require_mirror()
    instruction = prepare_test_set(mirror / DR, "DR", "DR", "instruction")
    completion = prepare_test_set(
        mirror / "test_data/test_complete/DR.csv", "DR", "DR", "completion"
    )
    assert (instruction["row_id"] == completion["row_id"]).all()
    assert (instruction["gold_label"] == completion["gold_label"]).all()


def test_unpinned_file_is_fetched_with_a_warning(tmp_path, caplog):
    mirror = require_mirror()
    with caplog.at_level("WARNING"):
        run_fetch_test_set(
            source_url(str(mirror), DR), None, "DR", "DR", "instruction",
            tmp_path / "a.csv", tmp_path / "a.parquet",
        )  # fmt: skip
    assert "no sha256 is pinned" in caplog.text and mirror_sha256(DR) in caplog.text
    assert read_provenance(tmp_path / "a.parquet")["sha256_pinned"] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"text,gpt-3.5-turbo\nabc,def\n", r"missing column\(s\) \['query'\]"),
        (b"query,gpt-3.5-turbo\n", "header but no rows"),
        (b'query,gpt-3.5-turbo\n"Consider this post: x",\n', "empty 'gpt-3.5-turbo' in data row"),
        (b'query,gpt-3.5-turbo\n"unterminated,quote\n', "malformed CSV"),
    ],
)
def test_malformed_files_are_rejected_with_the_file_named(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImhiBenchError, match=message) as err:
        read_test_csv(path)
    assert str(path) in str(err.value)


def test_unknown_gold_template_names_file_and_row(tmp_path):
    path = tmp_path / "DR.csv"
    pd.DataFrame(
        {
            "query": ["Consider this post: a", "Consider this post: b"],
            "gpt-3.5-turbo": [
                "Yes, the poster suffers from depression. Reasoning: r",
                "Perhaps. Reasoning: r",
            ],
        }
    ).to_csv(path, index=False)
    with pytest.raises(ImhiBenchError, match=r"DR.csv: data row 2: .*'Perhaps.'"):
        prepare_test_set(path, "DR", "DR", "instruction")


BODY = b"query,gpt-3.5-turbo\n" + b"a post,yes. Reasoning: because\n" * 50


def _serve_truncated(truncate_first: int, chunked: bool):
    """A loopback server whose first `truncate_first` answers stop halfway through the body."""
    calls = []

    class Truncating(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            calls.append(self.path)
            cut = len(calls) <= truncate_first
            body = BODY[: len(BODY) // 2] if cut else BODY
            self.send_response(200)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
                if not cut:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(BODY)))  # always the full length
                self.end_headers()
                self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_truncated_download_is_retried_then_rejected(tmp_path, monkeypatch, chunked):
    monkeypatch.setattr("imhibench.fetch.test_sets.time.sleep", lambda s: None)
    server, calls = _serve_truncated(truncate_first=99, chunked=chunked)
    url = f"http://127.0.0.1:{server.server_address[1]}/f.csv"
    try:
        message = "received 7\\d\\d of the 1\\d+ bytes" if not chunked else "IncompleteRead"
        with pytest.raises(ImhiBenchError, match=f"f.csv failed after 3 attempt.*{message}"):
            download(url, tmp_path / "f.csv", None, retries=3)
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_truncated_download_recovers_on_retry(tmp_path, monkeypatch, chunked):
    monkeypatch.setattr("imhibench.fetch.test_sets.time.sleep", lambda s: None)
    server, calls = _serve_truncated(truncate_first=1, chunked=chunked)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.csv"
        digest = download(url, tmp_path / "f.csv", None, retries=2)
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 2
    assert (tmp_path / "f.csv").read_bytes() == BODY
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_unexpected_error_leaves_no_temporary_file(tmp_path, monkeypatch):
    class Exploding:  # fails mid-stream, with the temporary file open
        def update(self, chunk):
            raise RuntimeError("disk on fire")

    monkeypatch.setattr("imhibench.fetch.test_sets.hashlib.sha256", Exploding)
    with serve_directory(tmp_path) as base:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "f.csv").write_bytes(BODY)
        with pytest.raises(RuntimeError, match="disk on fire"):
            download(f"{base}/src/f.csv", tmp_path / "out" / "f.csv", None)
    assert list((tmp_path / "out").iterdir()) == []


def test_run_fetch_copies_a_local_path(tmp_path):
    """`local_path` files (absolute here; relative ones resolve against the working directory)."""
    mirror = require_mirror()
    csv, parquet = tmp_path / "DR.csv", tmp_path / "DR.parquet"
    provenance = run_fetch_test_set(
        str(mirror / DR), mirror_sha256(DR), "DR", "DR", "instruction", csv, parquet
    )
    assert provenance["source"] == str((mirror / DR).resolve())
    assert len(read_table(parquet)) == 405
    with pytest.raises(ImhiBenchError, match="missing.csv does not exist"):
        run_fetch_test_set(
            str(tmp_path / "missing.csv"), None, "DR", "DR", "instruction", csv, parquet
        )
