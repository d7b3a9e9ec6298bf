import pandas as pd

from imhibench.aggregate.samples import sample_rows, write_sample
from imhibench.common.io import write_table


def frames():
    ids = ["DR-00000", "DR-00001", "DR-00002", "DR-00003"]
    test_set = pd.DataFrame({"row_id": ids, "query": ["q <0>", "q1", "q2", "x" * 1000],
                             "gold_answer": ["g0", "g1", "g2", "g3"]})  # fmt: skip
    responses = pd.DataFrame({"row_id": ids, "response": ["r0", "r1 & co", "r2", "r3"]})
    labels = pd.DataFrame({
        "row_id": ids, "gold_label": ["yes", "no", "yes", "no"],
        "label_mentalbert": ["yes", "yes", "no", "no"],
        "label_rule": ["yes", "no", "no", "no"], "rule_ood": [False, False, True, False],
    })  # fmt: skip
    scores = pd.DataFrame({"row_id": ids, "bart_score": [-1.0, -3.0, -2.0, -5.0],
                           "rougeL": [0.5, 0.1, 0.2, 0.3]})  # fmt: skip
    return test_set, responses, labels, scores


def test_worst_rows_come_first():
    rows = sample_rows(*frames(), ["mentalbert", "rule"])
    # wrong (rows 1, 2) before right (0, 3); within each, the lowest BART-score first
    assert rows["row_id"].tolist() == ["DR-00001", "DR-00002", "DR-00003", "DR-00000"]
    assert rows["correct"].tolist() == [False, False, True, True]
    assert len(sample_rows(*frames(), ["mentalbert"], n_rows=2)) == 2


def test_the_page_shows_everything_behind_a_row(tmp_path):
    paths = {}
    for name, frame in zip(("test", "responses", "labels", "scores"), frames(), strict=True):
        paths[name] = tmp_path / f"{name}.parquet"
        write_table(frame, paths[name])
    out = tmp_path / "page.html"
    write_sample(paths["test"], paths["responses"], paths["labels"], paths["scores"], out,
                 "m1", "DR", ["mentalbert", "rule"], n_rows=3)  # fmt: skip
    page = out.read_text()
    assert page.count('<tr class="wrong">') == 2 and page.count('<tr class="right">') == 1
    assert "3 of 4 rows" in page and "r1 &amp; co" in page and "DR-00000" not in page
    assert "no (out of domain)" in page and "<td>-2.000</td>" in page and "<td>0.300</td>" in page
    assert "x" * 400 + " …" in page and "x" * 401 not in page  # query excerpt
    first = page.index("DR-00001")
    assert first < page.index("DR-00002") < page.index("DR-00003")
