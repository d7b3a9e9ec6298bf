localrules:
    aggregate,


rule aggregate:
    input:
        unpack(get_aggregate_input),
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
    script:
        "../scripts/aggregate.py"
