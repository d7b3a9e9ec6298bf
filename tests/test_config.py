import copy
from pathlib import Path

import pytest
import yaml

from imhibench.config import Plan, checkpoint_dir, checkpoint_key, validate_config
from imhibench.errors import ImhiBenchError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow_config" / "schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "workflow_config" / name).read_text())


def merged(base: dict, override: dict) -> dict:
    """Snakemake's --configfile merge: nested dicts update, everything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@pytest.fixture
def paper() -> dict:
    return load("config.yaml")


def test_paper_config_is_valid_and_plans_the_paper(paper):
    validate_config(paper, SCHEMA)
    plan = Plan(paper)
    assert plan.models == [
        "MentaLLaMA-chat-7B", "MentaLLaMA-chat-13B", "MentalBART", "MentalT5",
        "MentaLLaMA-33B-lora", "ChatGPT-zero-shot", "LLaMA2-chat-7B-zero-shot",
    ]  # fmt: skip
    assert plan.table_datasets("main") == [
        "DR", "dreaddit", "swmh", "t-sid", "SAD", "CAMS", "loneliness", "MultiWD", "Irf",
    ]  # fmt: skip
    # CLP is never released: every model skips it, with a reason saying how to add it
    clp = [s for s in plan.skipped if s.dataset == "CLP"]
    assert len(clp) == 7 and all("never released" in s.reason for s in clp)
    # completion models skip the instruction-only expert sets
    assert ("MentalBART", "DR-expert") not in plan.jobs
    assert ("MentaLLaMA-chat-7B", "DR-expert") in plan.jobs
    assert len(plan.jobs) == 5 * 18 + 2 * 9
    # the API baseline reads no checkpoint; the LLaMA2 baseline is fetched from the hub
    assert plan.model_checkpoints("ChatGPT-zero-shot") == {}
    assert "meta-llama--Llama-2-7b-chat-hf@main" in plan.hub_checkpoints()
    assert plan.generate_rule("ChatGPT-zero-shot") == "generate_api_local"
    assert plan.generate_rule("LLaMA2-chat-7B-zero-shot") == "generate"


def _uncommented_keys(text: str) -> list[str]:
    """Key lines with no comment on them, on the line above, or on their parent key."""
    lines = text.splitlines()
    missing, parents = [], []  # parents: (indent, commented) of enclosing keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-", "[")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while parents and parents[-1][0] >= indent:
            parents.pop()
        commented = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
        if not commented and not (parents and parents[-1][1]):
            missing.append(f"line {i + 1}: {stripped}")
        parents.append((indent, commented or bool(parents and parents[-1][1])))
    return missing


@pytest.mark.parametrize(
    "name",
    [
        "workflow_config/config.yaml",
        "workflow_config/demo.yaml",
        "profiles/default/config.yaml",
        "profiles/slurm/config.yaml",
    ],
)
def test_every_config_key_has_a_comment(name):
    assert _uncommented_keys((REPO / name).read_text()) == []


def test_comment_check_can_fail():
    assert _uncommented_keys("a: 1  # ok\nb: 2\n") == ["line 2: b: 2"]


def test_demo_config_is_valid_and_local(paper):
    config = merged(paper, load("demo.yaml"))
    validate_config(config, SCHEMA)
    plan = Plan(config)
    assert plan.hub_checkpoints() == {}  # the demo needs no hub
    assert all(job[1] not in ("CLP", "swmh") for job in plan.jobs)
    assert plan.test_file_source("DR", "instruction").endswith("test_instruction/DR.csv")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(device="gpu"), r"device: 'gpu' is not one of"),
        (lambda c: c["model_catalog"]["MentalT5"].update(kind="rnn"), r"MentalT5.kind"),
        (lambda c: c["model_catalog"]["MentalT5"].pop("revision"), r"model_catalog.MentalT5"),
        (lambda c: c["model_catalog"]["MentaLLaMA-33B-lora"].pop("base"), r"'base' is a required"),
        (lambda c: c["dataset_catalog"]["DR"]["files"]["instruction"].update(sha256="xyz"),
         r"dataset_catalog.DR.files.instruction.sha256"),
        (lambda c: c.update(models=["GPT-9"]), r"models: 'GPT-9' is not in model_catalog"),
        (lambda c: c.update(datasets=["DR", "XX"]), r"datasets: 'XX' is not in dataset_catalog"),
        (lambda c: c["dataset_catalog"]["DR"].update(task="DRX"), r"DR.task: unknown"),
        (lambda c: c["classifiers"].pop("SAD"), r"no MentalBERT classifier for task 'SAD'"),
        (lambda c: c.update(rows_per_dataset=0), r"rows_per_dataset"),
        (lambda c: c["generation"].update(max_new_tokens="many"), r"generation.max_new_tokens"),
        (lambda c: c.update(colour="blue"), r"'colour' was unexpected"),
        (lambda c: c["model_catalog"]["ChatGPT-zero-shot"].pop("api"), r"'api' is a required"),
        (lambda c: c["model_catalog"]["ChatGPT-zero-shot"]["api"].update(mode="edit"),
         r"ChatGPT-zero-shot.api.mode"),
        (lambda c: c["model_catalog"]["ChatGPT-zero-shot"]["api"].update(api_key="sk-1"),
         r"'api_key' was unexpected"),
        (lambda c: c["model_catalog"]["ChatGPT-zero-shot"]["resources"].update(gpu=1),
         r"ChatGPT-zero-shot.resources.gpu: 0 was expected"),
        (lambda c: c["model_catalog"]["ChatGPT-zero-shot"].update(run_on="cluster"),
         r"'slurm_partition' is a required"),
        (lambda c: c["model_catalog"]["MentalT5"].update(run_on="local"), r"MentalT5"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(paper, edit, message):
    edit(paper)
    with pytest.raises(ImhiBenchError, match=message):
        validate_config(paper, SCHEMA)


def test_subset_from_command_line(paper):
    paper.update(models=["MentalBART"], datasets=["DR", "CLP"])
    validate_config(paper, SCHEMA)
    plan = Plan(paper)
    assert plan.jobs == [("MentalBART", "DR")]
    assert set(plan.hub_checkpoints()) == {
        "Tianlin668--MentalBART@main", "Tianlin668--DR@main",
        "facebook--bart-large-cnn@main", "roberta-large@main",
    }  # fmt: skip


def test_user_supplied_clp_file_is_planned(paper):
    paper["dataset_catalog"]["CLP"]["files"] = {
        "instruction": {"local_path": "/data/CLP.csv", "sha256": None}
    }
    validate_config(paper, SCHEMA)
    plan = Plan(paper)
    assert ("MentaLLaMA-chat-7B", "CLP") in plan.jobs
    assert plan.test_file_source("CLP", "instruction") == "/data/CLP.csv"


def test_checkpoint_locations():
    hub = {"hub_id": "klyang/MentaLLaMA-chat-7B", "revision": "abc123"}
    assert checkpoint_key(hub) == "klyang--MentaLLaMA-chat-7B@abc123"
    assert checkpoint_dir(hub) == "resources/checkpoints/klyang--MentaLLaMA-chat-7B@abc123"
    assert checkpoint_dir({**hub, "path": "/models/7b"}) == "/models/7b"


def test_generation_settings_merge_model_overrides(paper):
    paper["model_catalog"]["MentalT5"]["generation"] = {"max_new_tokens": 64}
    plan = Plan(paper)
    assert plan.generation_settings("MentalT5")["max_new_tokens"] == 64
    assert plan.generation_settings("MentalBART")["max_new_tokens"] == 2048


def test_scorer_settings_resolve_checkpoints(paper):
    settings = Plan(paper).scorer_settings()
    assert settings["bart_score"] == {
        "checkpoint": "resources/checkpoints/facebook--bart-large-cnn@main",
        "weights_file": "resources/scorers/bart_score.pth", "batch_size": 4, "max_length": 1024,
        "dtype": "float32",
    }  # fmt: skip
    assert settings["bert_score"]["model"] == "resources/checkpoints/roberta-large@main"
    assert settings["bert_score"]["num_layers"] == 17
    assert settings["rouge"] == {} and settings["bleu"] == {}


def test_paper_config_scores_as_upstream(paper):
    """ParaBank2 weights from the BARTScore Google Drive file, float32 everywhere."""
    plan = Plan(paper)
    assert plan.bart_score_weights() == {
        "gdrive_id": "1_7JfF7KOInb7ZrxKHIigTMR4ChVET01m", "sha256": None,
    }  # fmt: skip
    assert paper["label_dtype"] == "float32"
    assert paper["scorers"]["bert_score"]["dtype"] == "float32"
    assert paper["scorers"]["bart_score"]["dtype"] == "float32"


def test_demo_config_uses_a_local_weights_file(paper):
    config = merged(paper, load("demo.yaml"))
    validate_config(config, SCHEMA)
    source = Plan(config).bart_score_weights()
    assert source["local_path"] == "resources/demo_models/bart-score-weights.pth"
    assert source["gdrive_id"] is None


def test_without_weights_file_nothing_is_fetched(paper):
    paper["scorers"]["bart_score"]["weights_file"] = None
    plan = Plan(paper)
    assert plan.bart_score_weights_path() is None
    assert plan.scorer_settings()["bart_score"]["weights_file"] is None


@pytest.mark.parametrize(
    "weights_file",
    [{"sha256": None}, {"url": "http://x/y.pth", "local_path": "/y.pth", "sha256": None},
     {"url": "http://x/y.pth"}],
)  # fmt: skip
def test_weights_file_needs_one_source_and_a_sha256_key(paper, weights_file):
    paper["scorers"]["bart_score"]["weights_file"] = weights_file
    with pytest.raises(ImhiBenchError, match="scorers.bart_score"):
        validate_config(paper, SCHEMA)


def test_skip_messages_group_models(paper):
    messages = Plan(paper).skip_messages()
    assert (
        "skipping DR-expert for MentalBART, MentalT5: DR-expert has no completion split"
        in "\n".join(messages)
    )


def test_skip_messages_of_one_table_name_only_its_datasets(paper):
    plan = Plan(paper)
    main, expert = plan.skip_messages("main"), plan.skip_messages("expert")
    assert sorted(main + expert) == sorted(plan.skip_messages())
    assert any(m.startswith("skipping CLP ") for m in main)  # no job at all, still noted
    assert any(m.startswith("skipping DR-expert ") for m in expert)
    assert not any("-expert" in m.split(":")[0] for m in main)
    assert not any(m.startswith("skipping CLP ") for m in expert)


def test_command_line_strings_are_read_as_yaml_where_the_schema_wants_another_type(paper):
    # what Snakemake hands over for --config 'generation={batch_tokens: 4096, ...}' etc.
    paper["generation"].update(batch_tokens="4096", chat_template="true", shard_rows="1")
    paper.update(rows_per_dataset="null")
    paper["dataset_catalog"]["swmh"]["files"]["instruction"]["sha256"] = "null"
    paper["stage_resources"]["label"]["gpu"] = "0"
    # genuine strings stay strings, even when they would read as numbers
    paper["model_catalog"]["MentalT5"]["revision"] = "1234567"
    validate_config(paper, SCHEMA)
    assert paper["generation"]["batch_tokens"] == 4096
    assert paper["generation"]["chat_template"] is True
    assert paper["generation"]["shard_rows"] == 1
    assert paper["rows_per_dataset"] is None
    assert paper["dataset_catalog"]["swmh"]["files"]["instruction"]["sha256"] is None
    assert paper["stage_resources"]["label"]["gpu"] == 0
    assert paper["model_catalog"]["MentalT5"]["revision"] == "1234567"
    assert paper["model_catalog"]["MentalT5"]["hub_id"] == "Tianlin668/MentalT5"


def test_command_line_string_of_the_wrong_kind_is_still_refused(paper):
    paper["generation"]["batch_tokens"] = "[1, 2]"
    with pytest.raises(ImhiBenchError, match=r"generation.batch_tokens: \[1, 2\] is not of type"):
        validate_config(paper, SCHEMA)


def test_imhi_source_upstream_keyword(paper):
    upstream = Plan(paper).test_file_source("DR", "instruction")
    assert upstream.startswith("https://raw.githubusercontent.com/")
    paper["imhi"]["source"] = "upstream"
    validate_config(paper, SCHEMA)
    assert Plan(paper).test_file_source("DR", "instruction") == upstream


def test_imhi_source_null_string_names_the_keyword(paper):
    paper["imhi"]["source"] = "null"  # --config 'imhi={source: null}'
    with pytest.raises(ImhiBenchError, match="source: upstream"):
        validate_config(paper, SCHEMA)


def _refusal(config: dict) -> str:
    """The message with which ``validate_config`` refuses ``config``."""
    with pytest.raises(ImhiBenchError) as refused:
        validate_config(config, SCHEMA)
    return str(refused.value)


def test_continuous_engine_for_a_job_of_several_gpus_is_refused(paper):
    """transformers' continuous batching keeps its paged cache on one device: a model spread
    over the 33B job's 2 GPUs could not run, so the config is refused, naming both keys."""
    paper["generation"]["engine"] = "continuous"
    message = _refusal(paper)
    assert "generation.engine 'continuous' (MentaLLaMA-33B-lora) runs on one GPU" in message
    assert "model_catalog.MentaLLaMA-33B-lora.resources.gpu is 2" in message
    assert message.count("runs on one GPU") == 1  # one-GPU jobs may use it
    paper["models"] = ["MentaLLaMA-chat-7B", "MentaLLaMA-chat-13B"]  # 33B not selected: fine
    validate_config(paper, SCHEMA)
    paper["models"].append("MentaLLaMA-33B-lora")
    paper["generation"]["engine"] = "static"
    paper["model_catalog"]["MentaLLaMA-33B-lora"]["generation"] = {"engine": "continuous"}
    with pytest.raises(ImhiBenchError, match=r"model_catalog\.MentaLLaMA-33B-lora\.generation\."
                       r"engine 'continuous' \(MentaLLaMA-33B-lora\) runs on one GPU"):  # fmt: skip
        validate_config(paper, SCHEMA)
    paper["model_catalog"]["MentaLLaMA-33B-lora"]["resources"]["gpu"] = 1
    validate_config(paper, SCHEMA)


def test_vllm_lora_in_float32_is_refused(paper):
    """vLLM's LoRA kernels take float16/bfloat16 weights only; the paper config's float32 with
    engine vllm is refused for the LoRA model, naming the engine and dtype keys."""
    paper["generation"]["engine"] = "vllm"
    message = _refusal(paper)
    assert "engine 'vllm' (MentaLLaMA-33B-lora) with generation.dtype 'float32'" in message
    assert "LoRA adapters in float16 or bfloat16 only" in message
    assert message.count("generation.dtype") == 1  # causal models run vLLM in float32
    paper["model_catalog"]["MentaLLaMA-33B-lora"]["generation"] = {"dtype": "bfloat16"}
    validate_config(paper, SCHEMA)
    paper["generation"]["dtype"] = "auto"  # bfloat16 on GPU
    del paper["model_catalog"]["MentaLLaMA-33B-lora"]["generation"]
    validate_config(paper, SCHEMA)
