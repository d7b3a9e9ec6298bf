"""The ``imhibench`` command line: ``imhibench evaluate DATASET RESPONSES`` and
``imhibench validate-metrics RATINGS...``.

Non-clinical research use only: the labels and scores are research artefacts about
social-media text, not assessments of any person.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence

from imhibench.bench.cli import add_commands as add_bench_commands
from imhibench.common.errors import ImhiBenchError

EPILOG = "Non-clinical research use only; see the README."
DESCRIPTION = (
    "imhi-bench outside the Snakemake pipeline: score answers made elsewhere, validate the "
    "explanation metrics against human ratings, time the generation engines."
)


def _add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """The model-based scorers (ROUGE and BLEU always run), the device and the bootstrap."""
    from imhibench.score.metrics.correctness import DEFAULT_SEED

    parser.add_argument("--bertscore-model", metavar="PATH", help="add BERTScore F1")
    parser.add_argument("--bertscore-layers", type=int, metavar="N", help="BERTScore layer")
    parser.add_argument("--bartscore-model", metavar="PATH", help="add BARTScore")
    parser.add_argument("--bartscore-weights", metavar="FILE", help="e.g. bart_score.pth")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"bootstrap seed (default {DEFAULT_SEED}, the workflow config's seed)",
    )
    parser.add_argument("--bootstrap-resamples", type=int, default=1000, metavar="N")


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from imhibench.evaluate import DEFAULT_MAX_ANSWER_TOKENS, LABELERS, SPLITS

    parser = subparsers.add_parser(
        "evaluate",
        help="score one dataset's responses produced anywhere",
        description="Correctness (x100) and explanation quality of one responses file: "
        "upstream's goldens,generated_text CSV, or a row_id,response CSV/Parquet with "
        "--test-set.",
        epilog=EPILOG,
    )
    parser.add_argument("dataset", metavar="DATASET", help="IMHI task name, e.g. DR or SAD")
    parser.add_argument("responses", metavar="RESPONSES", help="responses .csv or .parquet")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="instruction",
        help="gold template split of the goldens column (default instruction)",
    )
    parser.add_argument(
        "--test-set", metavar="PATH", help="test-set Parquet (row_id, gold_answer, gold_label)"
    )
    parser.add_argument(
        "--labeler",
        choices=LABELERS,
        default=None,
        help="how responses become labels (default rule)",
    )
    parser.add_argument("--classifier", metavar="PATH", help="MentalBERT classifier directory")
    parser.add_argument(
        "--labels-column",
        metavar="NAME",
        help="score the file's own labels (upstream classifier names or ours)",
    )
    _add_scorer_options(parser)
    parser.add_argument(
        "--metrics-config",
        metavar="YAML",
        help="add GPTScore and/or the LLM judge: a YAML mapping gpt_score/llm_judge -> options "
        "(backend hf with checkpoint, or backend api with an api block; docs/metrics.md)",
    )
    parser.add_argument(
        "--max-answer-tokens",
        type=int,
        default=DEFAULT_MAX_ANSWER_TOKENS,
        metavar="N",
        help="warn about answers longer than N whitespace-separated tokens "
        f"(default {DEFAULT_MAX_ANSWER_TOKENS})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_evaluate)


def _labeler(args: argparse.Namespace) -> str:
    if args.classifier is not None and args.labeler != "mentalbert":
        raise ImhiBenchError("--classifier only applies to --labeler mentalbert")
    if args.labels_column is not None and args.labeler is not None:
        raise ImhiBenchError("give either --labeler or --labels-column, not both")
    return args.labeler or "rule"


def read_metrics_config(path: str) -> dict:
    """The gpt_score / llm_judge options of a `--metrics-config` YAML file."""
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))  # noqa: SIM115
    except (OSError, yaml.YAMLError) as err:
        raise ImhiBenchError(f"{path}: cannot read the metrics config: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ImhiBenchError(f"{path}: expected a mapping of gpt_score / llm_judge -> options")
    unknown = sorted(set(data) - {"gpt_score", "llm_judge"})
    if unknown:
        raise ImhiBenchError(f"{path}: unknown metric(s) {unknown}; known: gpt_score, llm_judge")
    return data


def _run_evaluate(args: argparse.Namespace) -> None:
    from imhibench.evaluate import evaluate, explanation_settings, format_report, jsonable

    settings = explanation_settings(
        args.bertscore_model, args.bertscore_layers, args.bartscore_model, args.bartscore_weights
    )
    if args.metrics_config is not None:
        settings.update(read_metrics_config(args.metrics_config))
    # Keep stdout for the result alone: libraries that print go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = evaluate(
            args.dataset,
            args.responses,
            split=args.split,
            test_set=args.test_set,
            labeler=_labeler(args),
            classifier=args.classifier,
            labels_column=args.labels_column,
            explanation=settings,
            device=args.device,
            seed=args.seed,
            n_resamples=args.bootstrap_resamples,
            max_answer_tokens=args.max_answer_tokens,
        )
    for warning in result["warnings"]:
        print(f"imhibench: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(jsonable(result), allow_nan=False))
    else:
        print(format_report(result))


def _add_validate_metrics(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate-metrics",
        help="correlate explanation metrics with human ratings",
        description="Score every rated explanation with the explanation metrics (the post as "
        "the reference text) and correlate them with the annotators' mean rating per aspect: "
        "upstream's human_evaluation/DR_annotation CSV files, or your own in the same layout.",
        epilog=EPILOG,
    )
    parser.add_argument("ratings", metavar="RATINGS", nargs="+", help="rating CSV files")
    _add_scorer_options(parser)
    parser.add_argument(
        "--out", metavar="DIR", help="also write the tables and the heat map under DIR"
    )
    parser.add_argument("--json", action="store_true", help="print the correlations as JSON")
    parser.set_defaults(handler=_run_validate_metrics)


def _run_validate_metrics(args: argparse.Namespace) -> None:
    from pathlib import Path

    from imhibench.common.tables import to_markdown
    from imhibench.evaluate import explanation_settings
    from imhibench.validate_metrics.run import run_validate_metrics, validate_metrics
    from imhibench.validate_metrics.tables import PLOT_NAME

    settings = explanation_settings(
        args.bertscore_model, args.bertscore_layers, args.bartscore_model, args.bartscore_weights
    )
    paths = {}
    for path in args.ratings:
        name = Path(path).stem
        if name in paths:
            raise ImhiBenchError(f"two rating files are named {name!r}: {paths[name]}, {path}")
        paths[name] = path
    common = {"device": args.device, "seed": args.seed, "n_resamples": args.bootstrap_resamples}
    # Keep stdout for the result alone: libraries that print go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if args.out is None:
            result = validate_metrics(paths, settings, **common)
        else:
            out = Path(args.out)
            result = run_validate_metrics(
                paths, settings, out / "tables", out / "plots" / PLOT_NAME, **common
            )
    if args.json:
        records = result.correlations.merge(result.agreement, on=["scope", "aspect"])
        print(records.to_json(orient="records"))
    else:
        print("\n".join(to_markdown(table) for table in result.tables))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="imhibench", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(subparsers)
    add_bench_commands(subparsers, EPILOG)  # bench, gpu-check, compare-engines
    _add_validate_metrics(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; 2 with the message on stderr for bad input, usage errors included."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        args.handler(args)
    except ImhiBenchError as err:
        print(f"imhibench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
