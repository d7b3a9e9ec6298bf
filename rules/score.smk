rule score:
    input:
        unpack(get_score_input),
    output:
        rows="results/score/{model}/{dataset}.parquet",
        summary="results/metrics/{model}/{dataset}.parquet",
    log:
        "logs/score/{model}/{dataset}.log",
    benchmark:
        "benchmarks/score/{model}/{dataset}.tsv"
    conda:
        "../envs/score.yaml"
    threads: get_stage_resource("score", "cpus")
    resources:
        nodes=JOB_NODES,
        gpu=get_stage_resource("score", "gpu"),
        mem_mb=get_stage_resource("score", "mem_mb"),
        runtime=get_stage_resource("score", "runtime"),
        cpus_per_task=get_stage_resource("score", "cpus"),
    params:
        task=get_task_name,
        labelers=config["labelers"],
        scorers=get_scorer_settings,
        model_metrics=get_model_metric_paths,
        seed=config["seed"],
    script:
        "../scripts/score.py"
