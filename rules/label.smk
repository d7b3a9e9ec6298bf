# One job per model over its planned datasets: each dataset's classifier is loaded once, and
# finished datasets are kept in results/.reuse/label (a rerun copies the unchanged ones).
rule label:
    input:
        unpack(get_label_input),
    output:
        directory("results/label/{model}"),
    log:
        "logs/label/{model}.log",
    benchmark:
        "benchmarks/label/{model}.tsv"
    conda:
        "../envs/label.yaml"
    threads: get_stage_resource("label", "cpus")
    resources:
        nodes=JOB_NODES,
        gpu=get_stage_resource("label", "gpu"),
        mem_mb=get_stage_resource("label", "mem_mb"),
        runtime=get_model_job_runtime("label"),
        cpus_per_task=get_stage_resource("label", "cpus"),
    params:
        jobs=get_label_jobs,
        reuse=get_reuse_dir("label"),
        labelers=config["labelers"],
        batch_size=config["label_batch_size"],
        dtype=get_label_dtype,
    script:
        "../scripts/label.py"
