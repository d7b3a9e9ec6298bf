localrules:
    aggregate,


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
        scorers=list(config["scorers"]),
        notes=get_table_notes,
        published_as=get_published_names,
        seed=config["seed"],
    script:
        "../scripts/aggregate.py"
