"""Metric validation: the explanation metrics against upstream's human ratings of explanations.

Upstream released three CSV files of DR explanations rated by three annotators on four aspects
(`human_evaluation/DR_annotation/`): `text` (the Reddit post), `label` (DR label 0/1), the
explanation in a column named after the system that wrote it (`gpt-3.5-turbo` = ChatGPT,
`curie-instruct-beta` = InstructGPT-3) and one cell per aspect holding the three ratings as a
string such as ``"[3, 3, 2]"`` (0-3). The paper chose BARTScore for its explanation table
because it correlated moderately with these ratings; this stage regenerates that evidence for
every configured explanation metric.

Every explanation is scored with `imhibench.metrics.compute_explanation_metrics`, the code of
the score stage, with the **post as the reference text** (the files hold no other text to
compare with). Each metric is then correlated with the annotators' mean rating per aspect, per
file and pooled over the files (Pearson, Spearman, Kendall tau-b: scipy's value and p-value,
and a seeded percentile bootstrap 95% interval resampling rows), beside the annotators'
agreement with each other (Krippendorff's alpha, ordinal, from the `krippendorff` package).
"""
