# Metric validation: every configured explanation metric against upstream's human ratings.
# It reads the rating files and the scorers only, so a model change reruns none of it. Each
# model metric (GPTScore, the judge) scores the rated explanations in a job of its own (rules
# of score_metric.smk, with the metric's resources / run_on), whose columns it merges.
localrules:
    fetch_human_ratings,
    rated_explanations,


rule fetch_human_ratings:
    output:
        f"{validation_ratings.RATINGS_DIR}/{{rating_file}}.csv",
    log:
        "logs/fetch/imhi/human_ratings/{rating_file}.log",
    conda:
        "../envs/fetch.yaml"
    params:
        sha256=get_rating_file_sha256,
    script:
        "../scripts/fetch_human_ratings.py"


rule rated_explanations:
    input:
        get_rated_explanations_input,
    output:
        responses=RATED_EXPLANATIONS["responses"],
        test_set=RATED_EXPLANATIONS["test_set"],
    log:
        "logs/validate_metrics/rated_explanations.log",
    conda:
        "../envs/validate_metrics.yaml"
    script:
        "../scripts/rated_explanations.py"


rule validate_metrics:
    input:
        unpack(get_validate_metrics_input),
    output:
        get_validation_outputs(),
    log:
        "logs/validate_metrics/validate_metrics.log",
    benchmark:
        "benchmarks/validate_metrics/validate_metrics.tsv"
    conda:
        "../envs/validate_metrics.yaml"
    threads: get_stage_resource("validate_metrics", "cpus")
    resources:
        gpu=get_stage_resource("validate_metrics", "gpu"),
        mem_mb=get_stage_resource("validate_metrics", "mem_mb"),
        runtime=get_stage_resource("validate_metrics", "runtime"),
        cpus_per_task=get_stage_resource("validate_metrics", "cpus"),
        nodes=JOB_NODES,
    params:
        rating_files=list(PLAN.rating_files()),
        model_metrics=list(PLAN.validation_model_metric_paths()),
        scorers=get_scorer_settings,
        parabank2_sha256=PLAN.parabank2_sha256(),
        seed=config["seed"],
        resamples=config["metric_validation"]["bootstrap_resamples"],
    script:
        "../scripts/validate_metrics.py"
