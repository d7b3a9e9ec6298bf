localrules:
    aggregate,


rule aggregate:
    input:
        get_metrics_inputs,
    output:
        get_report_outputs(),
    log:
        "logs/aggregate/tables.log",
    conda:
        "../envs/aggregate.yaml"
    params:
        models=PLAN.models_with_jobs(),
        datasets=get_table_datasets,
        labelers=config["labelers"],
        scorers=list(config["scorers"]),
        notes=get_table_notes,
        published=config.get("published_weighted_f1"),
    script:
        "../scripts/aggregate.py"
