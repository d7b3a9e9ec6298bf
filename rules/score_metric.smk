# Scorers that run as a job of their own per (metric, model, dataset): GPTScore and the LLM
# judge (imhibench.config.scorers.MODEL_METRICS). Backend hf (rule score_metric) runs through the
# profile with the metric's `resources` (a GPU); backend api runs where `run_on` says, as kind-api
# generation: local on the host running snakemake (rule score_metric_local, needs internet),
# cluster through the profile to `resources.slurm_partition` (rule score_metric_api). The score
# job merges their columns. The same rules score the metric validation's rated explanations
# as (model, dataset) = VALIDATION_JOB (imhibench.config), merged by rule validate_metrics.


localrules:
    score_metric_local,


rule score_metric_local:
    input:
        unpack(get_score_metric_input),
    output:
        "results/model_metrics/{metric}/{model}/{dataset}.parquet",
    log:
        "logs/model_metrics/{metric}/{model}/{dataset}.log",
    benchmark:
        "benchmarks/model_metrics/{metric}/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_score_metric_models(),
        dataset=get_score_metric_datasets(),
        metric=get_score_metrics("score_metric_local"),
    conda:
        "../envs/score.yaml"
    threads: 1
    params:
        options=get_score_metric_settings,
    script:
        "../scripts/score_metric.py"


rule score_metric:
    input:
        unpack(get_score_metric_input),
    output:
        "results/model_metrics/{metric}/{model}/{dataset}.parquet",
    log:
        "logs/model_metrics/{metric}/{model}/{dataset}.log",
    benchmark:
        "benchmarks/model_metrics/{metric}/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_score_metric_models(),
        dataset=get_score_metric_datasets(),
        metric=get_score_metrics("score_metric"),
    conda:
        "../envs/score.yaml"
    threads: get_score_metric_resource("cpus")
    resources:
        gpu=get_score_metric_resource("gpu"),
        mem_mb=get_score_metric_resource("mem_mb"),
        runtime=get_score_metric_resource("runtime"),
        cpus_per_task=get_score_metric_resource("cpus"),
        nodes=JOB_NODES,
    params:
        options=get_score_metric_settings,
    script:
        "../scripts/score_metric.py"


rule score_metric_api:
    input:
        unpack(get_score_metric_input),
    output:
        "results/model_metrics/{metric}/{model}/{dataset}.parquet",
    log:
        "logs/model_metrics/{metric}/{model}/{dataset}.log",
    benchmark:
        "benchmarks/model_metrics/{metric}/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_score_metric_models(),
        dataset=get_score_metric_datasets(),
        metric=get_score_metrics("score_metric_api"),
    conda:
        "../envs/score.yaml"
    threads: get_score_metric_resource("cpus")
    resources:
        mem_mb=get_score_metric_resource("mem_mb"),
        runtime=get_score_metric_resource("runtime"),
        cpus_per_task=get_score_metric_resource("cpus"),
        nodes=JOB_NODES,
        slurm_partition=get_score_metric_resource("slurm_partition"),
    params:
        options=get_score_metric_settings,
    script:
        "../scripts/score_metric.py"
