# One job per model over its planned datasets: the scorers are loaded once, and finished
# datasets are kept in results/.reuse/score (a rerun copies the unchanged ones).
rule score:
    input:
        unpack(get_score_input),
    output:
        rows=directory("results/score/{model}"),
        summary=directory("results/metrics/{model}"),
    log:
        "logs/score/{model}.log",
    benchmark:
        "benchmarks/score/{model}.tsv"
    conda:
        "../envs/score.yaml"
    threads: get_stage_resource("score", "cpus")
    resources:
        nodes=JOB_NODES,
        gpu=get_stage_resource("score", "gpu"),
        mem_mb=get_stage_resource("score", "mem_mb"),
        runtime=get_model_job_runtime("score"),
        cpus_per_task=get_stage_resource("score", "cpus"),
    params:
        jobs=get_score_jobs,
        reuse=get_reuse_dir("score"),
        labelers=config["labelers"],
        scorers=get_scorer_settings,
        seed=config["seed"],
    script:
        "../scripts/score.py"
