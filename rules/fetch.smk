# Fetching needs the internet: these run on the login/submit node (localrules).
localrules:
    fetch_test_set,
    fetch_checkpoint,
    fetch_example_responses,
    fetch_bart_score_weights,


rule fetch_test_set:
    input:
        unpack(get_local_test_file),
    output:
        csv="resources/imhi/{split}/{dataset}.csv",
        parquet="resources/imhi/{split}/{dataset}.parquet",
    log:
        "logs/fetch/imhi/{split}/{dataset}.log",
    conda:
        "../envs/fetch.yaml"
    params:
        sha256=get_test_file_sha256,
        task=get_task_name,
    script:
        "../scripts/fetch_test_set.py"


rule fetch_checkpoint:
    output:
        directory("resources/checkpoints/{checkpoint}"),
    log:
        "logs/fetch/checkpoints/{checkpoint}.log",
    conda:
        "../envs/fetch.yaml"
    params:
        spec=get_checkpoint_spec,
    script:
        "../scripts/fetch_checkpoint.py"


rule fetch_example_responses:
    output:
        "resources/imhi/examples/{dataset}.csv",
    log:
        "logs/fetch/imhi/examples/{dataset}.log",
    conda:
        "../envs/fetch.yaml"
    params:
        sha256=get_example_responses_sha256,
    script:
        "../scripts/fetch_example_responses.py"


# One folder per source (imhibench.fetch.scorer_weights.source_key): configs with different sources
# never write each other's file. The lock file beside it (sha256 of the first fetch) is not an
# output, so a refetch keeps it and must match it.
rule fetch_bart_score_weights:
    input:
        get_bart_score_weights_local,
    output:
        weights=BART_SCORE_WEIGHTS,
        record=f"{BART_SCORE_WEIGHTS}.json",
    log:
        "logs/fetch/bart_score_weights/{weights_source}.log",
    wildcard_constraints:
        weights_source=get_bart_score_weights_folders(),
    conda:
        "../envs/fetch.yaml"
    params:
        source=get_bart_score_weights_source,
    script:
        "../scripts/fetch_bart_score_weights.py"
