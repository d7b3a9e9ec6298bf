localrules:
    aggregate,
    plots,
    answer_sample,


rule aggregate:
    input:
        summaries=get_metrics_inputs,
        labels=get_label_inputs,
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
        labels=get_label_inputs,
    output:
        get_plot_outputs(),
    log:
        "logs/aggregate/plots.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        jobs=PLAN.jobs,
        labeler=config["labelers"][0],
        labelers=config["labelers"],
        task_labels=get_task_labels,
    script:
        "../scripts/plots.py"


rule answer_sample:
    input:
        unpack(get_sample_input),
    output:
        report(
            "results/samples/{model}/{dataset}.html",
            caption="../report/samples.rst",
            category="Answers",
            subcategory="{model}",
        ),
    log:
        "logs/aggregate/samples/{model}/{dataset}.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        labelers=config["labelers"],
    script:
        "../scripts/answer_sample.py"
