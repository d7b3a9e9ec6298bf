import copy
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imhibench.common.errors import ImhiBenchError
from imhibench.config.paths import checkpoint_dir, checkpoint_key
from imhibench.config.plan import Plan
from imhibench.config.validation import validate_config

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


PAPER_WEIGHTS = (
    "resources/scorers/bart_score/gdrive-1_7JfF7KOInb7ZrxKHIigTMR4ChVET01m/bart_score.pth"
)


def test_scorer_settings_resolve_checkpoints(paper):
    settings = Plan(paper).scorer_settings()
    assert settings["bart_score"] == {
        "checkpoint": "resources/checkpoints/facebook--bart-large-cnn@main",
        "weights_file": PAPER_WEIGHTS, "batch_size": 4, "max_length": 1024,
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
    # Each source has a folder of its own: the demo never writes the paper's file.
    demo_path = Plan(config).bart_score_weights_path()
    assert demo_path.startswith("resources/scorers/bart_score/local_path-")
    assert demo_path.endswith("/bart_score.pth") and demo_path != PAPER_WEIGHTS
    assert Plan(paper).bart_score_weights_path() == PAPER_WEIGHTS


def test_pinning_the_weights_digest_keeps_their_path(paper):
    pinned = copy.deepcopy(paper)
    pinned["scorers"]["bart_score"]["weights_file"]["sha256"] = "a" * 64
    assert Plan(pinned).bart_score_weights_path() == PAPER_WEIGHTS
    url = {"url": "https://example.org/bart_score.pth", "sha256": None}
    other_url = {**url, "url": "https://example.org/other.pth"}
    pinned["scorers"]["bart_score"]["weights_file"] = url
    first = Plan(pinned).bart_score_weights_path()
    pinned["scorers"]["bart_score"]["weights_file"] = other_url
    assert first.startswith("resources/scorers/bart_score/url-")
    assert Plan(pinned).bart_score_weights_path() != first


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


UPSTREAM = "https://raw.githubusercontent.com/SteveKGYang/MentalLLaMA/"


@pytest.mark.parametrize("source", [None, "upstream", "null"])  # "null": as --config passes it
def test_imhi_source_upstream_resolves_every_imhi_file(paper, source):
    """Test files and example answers go through one resolver: null and the keyword
    `upstream` both mean GitHub at imhi.commit, for the example answers too."""
    paper["imhi"]["source"] = source
    validate_config(paper, SCHEMA)
    plan = Plan(paper)
    base = f"{UPSTREAM}{paper['imhi']['commit']}/"
    assert plan.test_file_source("DR", "instruction") == base + "test_data/test_instruction/DR.csv"
    assert plan.example_responses_source("DR-expert") == (
        base + "examples/response_generation_examples/DR.csv"
    )


def test_imhi_source_mirror_serves_every_imhi_file(paper, tmp_path):
    paper["imhi"]["source"] = str(tmp_path)
    plan = Plan(paper)
    assert plan.test_file_source("DR", "instruction") == (
        (tmp_path / "test_data/test_instruction/DR.csv").as_uri()
    )
    assert plan.example_responses_source("SAD-expert") == (
        (tmp_path / "examples/response_generation_examples/SAD.csv").as_uri()
    )


def demo_config() -> dict:
    return merged(load("config.yaml"), load("demo.yaml"))


@pytest.mark.parametrize(
    ("key", "value", "repeated"),
    [
        ("models", ["demo-llama", "demo-bart", "demo-llama"], "'demo-llama'"),
        ("datasets", ["DR", "t-sid", "DR"], "'DR'"),
    ],
)
def test_repeated_model_or_dataset_is_refused_naming_the_key(key, value, repeated):
    config = demo_config()
    config[key] = value
    with pytest.raises(ImhiBenchError, match=rf"  {key}: .*non-unique.*\(repeated: {repeated}\)"):
        validate_config(config, SCHEMA)


def test_names_that_differ_only_in_case_are_refused():
    config = demo_config()
    config["dataset_catalog"]["dr"] = config["dataset_catalog"]["DR"]
    config["datasets"] = ["DR", "dr"]
    with pytest.raises(ImhiBenchError, match=r"datasets: 'DR' and 'dr' differ only in case"):
        validate_config(config, SCHEMA)


def test_command_line_nulls_unset_values_where_null_is_accepted(paper):
    # what Snakemake hands over for published_weighted_f1=null and nested `null`s
    paper["published_weighted_f1"] = "null"
    paper["model_catalog"]["MentalBART"]["path"] = "null"
    paper["model_catalog"]["ChatGPT-zero-shot"]["api"]["api_key_env"] = "null"
    paper["scorers"]["bart_score"]["weights_file"].update(gdrive_id="null", local_path="w.pth")
    validate_config(paper, SCHEMA)
    assert paper["published_weighted_f1"] is None
    assert Plan(paper).published_file().endswith("published_weighted_f1.csv")
    assert paper["model_catalog"]["MentalBART"]["path"] is None
    assert checkpoint_dir(paper["model_catalog"]["MentalBART"]) == (
        "resources/checkpoints/Tianlin668--MentalBART@main"
    )
    assert paper["model_catalog"]["ChatGPT-zero-shot"]["api"]["api_key_env"] is None
    assert Plan(paper).bart_score_weights() == {
        "gdrive_id": None, "local_path": "w.pth", "sha256": None,
    }  # fmt: skip


def test_weights_file_null_unsets_the_inherited_source_from_a_yaml_file(paper):
    override = {"scorers": {"bart_score": {"weights_file": {"gdrive_id": None, "url": "http://x"}}}}
    config = merged(paper, override)
    validate_config(config, SCHEMA)
    assert Plan(config).bart_score_weights()["url"] == "http://x"


def test_a_rating_file_set_to_null_is_left_out_of_the_metric_validation(paper):
    override = {"metric_validation": {"ratings": {"chatgpt_data": None, "gpt3_data": None}}}
    config = merged(paper, override)
    validate_config(config, SCHEMA)
    assert list(Plan(config).rating_files()) == ["chatgpt_false_data"]
    config["metric_validation"]["ratings"]["gpt3_data"] = {"path": "x.csv"}  # no sha256 key
    with pytest.raises(ImhiBenchError, match="metric_validation.ratings.gpt3_data"):
        validate_config(config, SCHEMA)


def test_integral_floats_become_integers_and_others_are_refused(paper):
    paper.update(seed=42.0, rows_per_dataset="8.0")
    paper["generation"]["batch_tokens"] = 4096.0
    validate_config(paper, SCHEMA)
    assert paper["seed"] == 42 and type(paper["seed"]) is int
    assert paper["rows_per_dataset"] == 8 and type(paper["rows_per_dataset"]) is int
    assert type(paper["generation"]["batch_tokens"]) is int
    # the bootstrap takes the seed as it is after validation
    from imhibench.score.metrics.correctness import weighted_f1_ci

    weighted_f1_ci(["a", "b"], ["a", "a"], paper["seed"], 10)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", 42.5, r"seed: 42.5 is not of type 'integer'"),
        ("seed", -1, r"seed: -1 is less than the minimum of 0"),
        ("seed", True, r"seed: True is not of type 'integer'"),
        ("published_weighted_f1", "", r"published_weighted_f1: '' should be non-empty"),
        ("published_weighted_f1", "no/such.csv", r"published_weighted_f1: no/such.csv: cannot"),
    ],
)
def test_odd_values_are_refused_naming_the_key(paper, key, value, message):
    paper[key] = value
    with pytest.raises(ImhiBenchError, match=message):
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
    for seq2seq in ("MentalBART", "MentalT5"):  # vLLM is for causal models
        paper["model_catalog"][seq2seq].setdefault("generation", {})["engine"] = "static"
    message = _refusal(paper)
    assert "engine 'vllm' (MentaLLaMA-33B-lora) with generation.dtype 'float32'" in message
    assert "LoRA adapters in float16 or bfloat16 only" in message
    assert message.count("generation.dtype") == 1  # causal models run vLLM in float32
    paper["model_catalog"]["MentaLLaMA-33B-lora"]["generation"] = {"dtype": "bfloat16"}
    validate_config(paper, SCHEMA)
    paper["generation"]["dtype"] = "auto"  # bfloat16 on GPU
    del paper["model_catalog"]["MentaLLaMA-33B-lora"]["generation"]
    validate_config(paper, SCHEMA)


def test_published_as_must_be_a_row_of_the_published_file(paper):
    paper["model_catalog"]["MentalT5"]["published_as"] = "MentalT5-paper"
    with pytest.raises(ImhiBenchError, match=r"MentalT5.published_as: 'MentalT5-paper' is not a"):
        validate_config(paper, SCHEMA)


def test_a_config_with_no_job_is_refused(paper):
    paper.update(models=["MentalBART"], datasets=["DR-expert", "CLP"])
    with pytest.raises(ImhiBenchError, match=r"no \(model, dataset\) job(.|\n)*skipping CLP"):
        validate_config(paper, SCHEMA)


# ---- property: random overrides of every key -----------------------------------------------


def _key_paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every key of a config, nested ones included (a list is one value)."""
    paths = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _key_paths(item, (*path, key))
    return paths


ODD_VALUES = [None, "null", "~", "", "x", "demo-llama", "DR", 0, -1, 42.5, 10**12, True, "true",
              "[1, 2]", "{a: 1}", {}, [], ["DR", "DR"], ["demo-llama", "demo-llama"]]  # fmt: skip


def _variants(current: object) -> list:
    """The value in other forms that may be valid: null (as YAML and as `--config` passes it),
    as a command-line string, as an integral float, a list reordered, shortened or with a
    repeated item."""
    variants = [None, "null"]
    if isinstance(current, list) and current:
        variants += [current[::-1], current[:1], current[-2:], current + current[:1]]
    if isinstance(current, bool | int | float | str):
        variants.append(str(current))  # how Snakemake passes a nested value
    if isinstance(current, int) and not isinstance(current, bool):
        variants += [float(current), current + 0.5, -current]
    return variants


def _trials(demo: dict, rng: random.Random) -> list[list[tuple[tuple, object]]]:
    """Each top-level key with every variant and three odd values; then 40 random nested keys
    with one value each, and 10 changes of 2-3 random keys at once."""
    trials = []
    for key, current in demo.items():
        values = _variants(current) + rng.sample(ODD_VALUES, 3)
        trials += [[((key,), value)] for value in values]
    nested = [p for p in _key_paths(demo) if len(p) > 1]

    def change(path: tuple) -> tuple[tuple, object]:
        pool = _variants(demo_value(demo, path)) if rng.random() < 0.5 else ODD_VALUES
        return path, rng.choice(pool)

    trials += [[change(path)] for path in rng.sample(nested, 40)]
    trials += [[change(p) for p in rng.sample(nested, rng.randint(2, 3))] for _ in range(10)]
    return trials


def _set_path(config: dict, path: tuple, value: object) -> None:
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


def _names_a_key(message: str, paths: list[tuple]) -> bool:
    """The message names an overridden key, or the entry holding it (its parent)."""
    names = {".".join(map(str, p[: len(p) - cut])) for p in paths for cut in (0, 1)}
    return any(f"  {name}" in message or f", {name}" in message for name in names if name)


def _fixture_outputs(plan: Plan, tmp_path: Path) -> tuple[list[Path], dict]:
    """Small label and summary files of every planned job, as the score stage writes them."""
    from imhibench.common.io import write_table
    from imhibench.common.tasks import all_tasks

    labelers = plan.config["labelers"]
    summaries, labels = [], {}
    for n, (model, dataset) in enumerate(plan.jobs):
        task = all_tasks()[plan.task_of(dataset)]
        gold = [task.labels[i % len(task.labels)] for i in range(6)]
        predicted = gold[1:] + gold[:1]
        labels[model, dataset] = tmp_path / f"label-{n}.parquet"
        frame = pd.DataFrame({"row_id": [f"{dataset}-{i}" for i in range(6)], "gold_label": gold})
        write_table(frame.assign(**{f"label_{lab}": predicted for lab in labelers}),
                    labels[model, dataset])  # fmt: skip
        rows = [("weighted_f1", lab, 50.0 + n) for lab in labelers]
        rows += [("weighted_f1_ci_low", lab, 40.0 + n) for lab in labelers]
        rows += [("weighted_f1_ci_high", lab, 60.0 + n) for lab in labelers]
        if "bart_score" in plan.config["scorers"]:
            rows.append(("bart_score", None, -3.0 - n / 10))
        split = plan.split_of(model)
        summary = pd.DataFrame(
            [(model, dataset, task.name, split, metric, lab, v) for metric, lab, v in rows],
            columns=["model", "dataset", "task", "split", "metric", "labeler", "value"],
        )
        summaries.append(tmp_path / f"summary-{n}.parquet")
        record = {"model": model, "dataset": dataset, "seed": plan.config["seed"],
                  "scorer_checkpoints": {"bart_score": {"hub_id": "facebook/bart-large-cnn"}},
                  "bart_score_weights": {"sha256": "ab" * 32}}  # fmt: skip
        write_table(summary, summaries[-1], record)
    return summaries, labels


def _plan_as_the_dag_does(plan: Plan) -> None:
    """What rules/common.smk asks of the plan to build the DAG."""
    from imhibench.common.execution import answer_model_spec, answer_settings

    config = plan.config
    for model, dataset in plan.jobs:
        plan.test_file_source(dataset, plan.split_of(model))
        answer_model_spec(plan.model(model))
        answer_settings(plan.generation_settings(model))
        plan.rows_of(model)
        [checkpoint_dir(spec) for spec in plan.model_checkpoints(model).values()]
        if dataset in config.get("imhi_example_responses", {}):
            plan.example_responses_source(dataset)
    plan.hub_checkpoints()
    plan.scorer_settings()


def _run_aggregate(plan: Plan, tmp_path: Path) -> None:
    """The aggregate stage with the parameters that rules/aggregate.smk and
    scripts/aggregate.py give it, on small fixture outputs."""
    from imhibench.aggregate.specs import table_specs
    from imhibench.aggregate.write import write_tables

    config = plan.config
    summaries, labels = _fixture_outputs(plan, tmp_path)
    groups = {g: plan.table_datasets(g) for g in ("main", "expert") if plan.table_datasets(g)}
    write_tables(
        summary_paths=summaries,
        out_dir=tmp_path / "tables",
        specs=table_specs(config["labelers"][0], list(config["scorers"]), list(groups)),
        models=plan.models_with_jobs(),
        datasets_by_group=groups,
        task_of={d: plan.task_of(d) for d in plan.datasets},
        skipped={table: plan.skip_messages(table) for table in ("main", "expert")},
        published=plan.published_file(),
        published_as=plan.published_names(),
        label_paths=labels,
        seed=config["seed"],
        random_weights=plan.random_weight_models(),
        parabank2_sha256=plan.parabank2_sha256(),
    )


def test_random_overrides_fail_naming_the_key_or_aggregate_to_the_end(tmp_path):
    """Seeded random overrides of every key of the demo config (types, nulls, duplicates;
    bounded: about 160 configs): validation refuses each naming a key it was given, or the
    config plans and aggregates to the end. The aggregate runs once per distinct set of its
    parameters (most nested overrides leave them as they are)."""
    rng = random.Random(24)
    demo = demo_config()
    aggregated: set[str] = set()
    refused = 0
    for n, trial in enumerate(_trials(demo, rng)):
        config = copy.deepcopy(demo)
        for path, value in trial:
            _set_path(config, path, copy.deepcopy(value))
        changes = [f"{'.'.join(path)}={value!r}" for path, value in trial]
        try:
            validate_config(config, SCHEMA)
        except ImhiBenchError as err:
            assert _names_a_key(str(err), [path for path, _ in trial]), f"{changes}: {err}"
            refused += 1
            continue
        plan = Plan(config)
        _plan_as_the_dag_does(plan)
        signature = repr((plan.jobs, plan.published_names(), plan.published_file(),
                          config["labelers"], list(config["scorers"]), config["seed"]))  # fmt: skip
        if signature not in aggregated:
            aggregated.add(signature)
            _run_aggregate(plan, tmp_path / f"trial-{n}")
    assert refused > 50 and len(aggregated) > 5, (refused, len(aggregated))


def demo_value(config: dict, path: tuple) -> object:
    for key in path:
        config = config[key]
    return config


def test_snakemake_prints_a_config_error_alone_without_traceback_lines(tmp_path):
    """A bad config stops `snakemake` with the message and nothing after it (the two
    traceback lines into common.smk and config.py are gone)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / "workflow_config" / "demo.yaml"),
         "--config", "seed=abc"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.endswith(
        "imhi-bench: invalid configuration:\n  seed: 'abc' is not of type 'integer'\n"
    ), run.stderr
    assert 'File "' not in run.stderr and "Traceback" not in run.stderr


def test_table_only_keys_are_no_rule_params(paper):
    """`random_weights` and `parabank2_sha256` change what the tables say, never a rerun of
    generation or scoring (they are not in the generate and score rules' params)."""
    from imhibench.common.execution import answer_model_spec

    config = merged(paper, load("demo.yaml"))
    config["scorers"]["bart_score"]["parabank2_sha256"] = "ab" * 32
    validate_config(config, SCHEMA)
    plan = Plan(config)
    assert "parabank2_sha256" not in plan.scorer_settings()["bart_score"]
    assert plan.parabank2_sha256() == "ab" * 32
    assert "random_weights" not in answer_model_spec(plan.model("demo-llama"))
    assert plan.random_weight_models() == ["demo-llama", "demo-bart", "demo-t5", "demo-llama-lora"]


def test_the_80_gb_assumption_is_said_where_resources_are_set_and_the_profile_shows_gpu_type():
    config = (REPO / "workflow_config" / "config.yaml").read_text()
    assert "assume 80 GB GPUs, so on a cluster with" in config
    assert "ask for the type with gpu_model or constraint in the SLURM profile" in config
    profile = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert "#     gpu_model: a100  # sbatch --gpus=a100:N, N from the config\n" in profile
    assert "#     constraint: a100_80gb  # sbatch --constraint, a node feature of your site\n" in (
        profile
    )
    assert "assume 80 GB GPUs" in profile


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ({"engine": "upstream", "shard_rows": 100},
         "generation.engine='upstream', generation.shard_rows=100 (demo-llama): generation "
         "settings: engine 'upstream' needs shard_rows a multiple of 8"),
        ({"engine": "upstream", "dtype": "bfloat16"},
         "generation.dtype='bfloat16', generation.engine='upstream' (demo-llama): generation "
         "settings: engine 'upstream' runs in float32"),
        ({"engine": "continuous", "decoding": "checkpoint"},
         "generation.decoding='checkpoint', generation.engine='continuous' (demo-llama): "
         "generation settings: decoding 'checkpoint' needs engine static or upstream"),
        ({"engine": "upstream", "chat_template": True},
         "generation.chat_template=True, generation.engine='upstream' (demo-llama): generation "
         "settings: engine 'upstream' feeds the raw queries"),
    ],
)  # fmt: skip
def test_generation_settings_a_job_would_refuse_are_refused_at_once(generation, expected):
    """The generate job's own checks (imhibench.generate.engines.job_settings) run on every
    selected model's merged settings when the config is read, not on the GPU node."""
    config = demo_config()
    config["models"] = ["demo-llama"]
    config["generation"].update(generation)
    assert expected in _refusal(config)


def test_a_global_engine_seq2seq_models_cannot_run_is_refused_naming_them():
    config = demo_config()
    config["generation"]["engine"] = "continuous"
    message = _refusal(config)
    for model in ("demo-bart", "demo-t5"):
        assert (
            f"generation.engine='continuous' ({model}): generation settings: engine "
            "'continuous' is for causal and lora models, not kind 'seq2seq'"
        ) in message
    assert "(demo-llama)" not in message  # causal models run it
    for model in ("demo-bart", "demo-t5"):  # set per model, as the message says
        config["model_catalog"][model]["generation"] = {"engine": "static"}
    validate_config(config, SCHEMA)


def test_a_setting_of_the_model_entry_is_named_by_its_own_key():
    config = demo_config()
    config["models"] = ["demo-llama-lora"]
    config["model_catalog"]["demo-llama-lora"]["generation"] = {"engine": "upstream",
                                                                 "shard_rows": 12}  # fmt: skip
    assert (
        "model_catalog.demo-llama-lora.generation.engine='upstream', "
        "model_catalog.demo-llama-lora.generation.shard_rows=12 (demo-llama-lora)"
    ) in _refusal(config)


def _judge_api(run_on: str) -> dict:
    spec = {
        "backend": "api", "run_on": run_on,
        "api": {"base_url": "http://localhost:1/v1", "model": "judge",
                "api_key_env": "IMHI_TEST_JUDGE_KEY"},
        "resources": {"gpu": 0, "cpus": 1, "mem_mb": 2000, "runtime": 60},
    }  # fmt: skip
    if run_on == "cluster":
        spec["resources"]["slurm_partition"] = "internet"
    return spec


def test_a_local_api_metric_without_its_key_is_refused_before_any_job(monkeypatch):
    """`backend: api, run_on: local`: the key must be in this host's environment; found now,
    not after all generation. `run_on: cluster` is not checked (the key may exist there only)."""
    monkeypatch.delenv("IMHI_TEST_JUDGE_KEY", raising=False)
    config = demo_config()
    config["scorers"]["llm_judge"] = _judge_api("local")
    message = _refusal(config)
    assert (
        "scorers.llm_judge.api.api_key_env: environment variable IMHI_TEST_JUDGE_KEY "
        "(api.api_key_env) is not set"
    ) in message
    assert "or remove llm_judge from `scorers`" in message
    monkeypatch.setenv("IMHI_TEST_JUDGE_KEY", "sk-test")
    validate_config(config, SCHEMA)
    monkeypatch.delenv("IMHI_TEST_JUDGE_KEY")
    config["scorers"]["llm_judge"] = _judge_api("cluster")
    validate_config(config, SCHEMA)
