# Tiny local models for the demo and the tests (workflow_config/demo.yaml points at them).
DEMO_MODELS = "resources/demo_models"
DEMO_MODEL_DIRS = [
    "causal",
    "seq2seq-bart",
    "seq2seq-t5",
    "lora-base",
    "lora-adapter",
    "bart-score",
    "bert-score",
    *(f"classifiers/{task}" for task in ALL_TASKS),
]


localrules:
    build_demo_models,


rule build_demo_models:
    output:
        manifest=f"{DEMO_MODELS}/demo_models.json",
        bart_score_weights=f"{DEMO_MODELS}/bart-score-weights.pth",
        dirs=[directory(f"{DEMO_MODELS}/{name}") for name in DEMO_MODEL_DIRS],
    log:
        "logs/demo/build_demo_models.log",
    conda:
        "../envs/generate.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/build_demo_models.py"
