localrules:
    aggregate,
    plots,
    answer_sample,


rule aggregate:
    input:
        summaries=get_metrics_dirs,
        labels=get_label_dirs,
        published=get_published_file,
    output:
        get_report_outputs(),
    log:
        "logs/aggregate/tables.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        models=PLAN.models_with_jobs(),
        jobs=PLAN.jobs,
        summary_files=get_metrics_files,
        label_files=get_label_files,
        datasets=get_table_datasets,
        tasks=get_task_names,
        labelers=config["labelers"],
        scorers=get_table_scorers,
        skipped=get_table_skips,
        published_as=get_published_names,
        seed=config["seed"],
        random_weights=PLAN.random_weight_models(),
        parabank2_sha256=PLAN.parabank2_sha256(),
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        tables=get_plot_tables,
        all_metrics="results/tables/all_metrics.parquet",
        labels=get_label_dirs,
    output:
        get_plot_outputs(),
    log:
        "logs/aggregate/plots.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        jobs=PLAN.jobs,
        label_files=get_label_files,
        labeler=config["labelers"][0],
        labelers=config["labelers"],
        task_labels=get_task_labels,
    script:
        "../scripts/plots.py"


# One job per model: its datasets' answer pages, each page under 1 s of work.
rule answer_sample:
    input:
        unpack(get_sample_input),
    output:
        report(
            directory("results/samples/{model}"),
            patterns=["{name}.html"],
            caption="../report/samples.rst",
            category="Answers",
            subcategory="{model}",
        ),
    log:
        "logs/aggregate/samples/{model}.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        pages=get_sample_pages,
        labelers=config["labelers"],
    script:
        "../scripts/answer_sample.py"
