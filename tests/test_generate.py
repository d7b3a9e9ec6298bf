"""Generation backends on the tiny demo models, batching, and response import."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from support import require_mirror

from imhibench.common.errors import ImhiBenchError
from imhibench.generate import GenerationSettings, import_responses, known_kinds, load_backend
from imhibench.generate.batching import plan_batches
from imhibench.generate.causal import load_tokenizer
from imhibench.generate.hf import HFGenerator
from imhibench.generate.lora import load_lora_model, tokenizer_dir

LONG_POST = "Work is piling up, my boss yells at me and I cannot sleep at night. " * 12
QUERIES = [
    'Consider this post: "I feel sad." Question: Does the poster suffer from depression?',
    "hi",
    f'Consider this post: "{LONG_POST}" Question: What is the stress cause of this post?',
    "Nobody texts me back anymore. Question: Does the poster suffer from loneliness?",
    "ok ok",
]
SETTINGS = GenerationSettings(max_new_tokens=10, batch_tokens=100_000, dtype="float32")
UPSTREAM_DR = "examples/response_generation_examples/DR.csv"
EXPERT_DR = "human_evaluation/test_instruction_expert/DR.csv"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _backend(demo_models, name: str, kind: str, settings=SETTINGS, base: str | None = None):
    base_dir = demo_models[base] if base else None
    return load_backend(
        kind, model_dir=demo_models[name], base_model_dir=base_dir, settings=settings, device="cpu"
    )


def _one_by_one(backend, queries=QUERIES) -> list[list[int]]:
    return [backend.generate_token_ids([q])[0] for q in queries]


@pytest.mark.parametrize(
    ("name", "kind", "base"),
    [
        ("causal", "causal", None),
        ("seq2seq-bart", "seq2seq", None),
        ("seq2seq-t5", "seq2seq", None),
        ("lora-adapter", "lora", "lora-base"),
    ],
)
def test_batched_greedy_equals_one_at_a_time(demo_models, name, kind, base):
    backend = _backend(demo_models, name, kind, base=base)
    result = backend.generate(QUERIES)
    assert len(result.texts) == len(QUERIES) == len(result.n_output_tokens)
    assert all(t.strip() for t in result.texts)
    assert len(set(result.texts)) > 1  # the answer depends on the query
    assert all(0 < n <= SETTINGS.max_new_tokens for n in result.n_output_tokens)
    batched = backend.generate_token_ids(QUERIES)
    assert batched == _one_by_one(backend)
    assert [len(x) for x in batched] == result.n_output_tokens


def test_budget_batching_restores_order(demo_models):
    lengths = [len(x) for x in _backend(demo_models, "causal", "causal").encode(QUERIES)]
    budget = 2 * (max(lengths) + 10)
    settings = GenerationSettings(max_new_tokens=10, batch_tokens=budget, max_batch_size=2)
    assert len(plan_batches(lengths, 10, budget, 2)) >= 3
    backend = _backend(demo_models, "causal", "causal", settings)
    assert backend.generate_token_ids(QUERIES) == _one_by_one(backend)
    reversed_ids = backend.generate_token_ids(QUERIES[::-1])
    assert reversed_ids == backend.generate_token_ids(QUERIES)[::-1]


def test_left_padding_matters(demo_models):
    """Right-padding a causal batch changes the short queries' answers: the test can fail."""
    import torch

    backend = _backend(demo_models, "causal", "causal")
    good = backend.generate_token_ids(QUERIES)
    ids = backend.encode(QUERIES)
    width = max(map(len, ids))
    pad = backend.tokenizer.pad_token_id
    rows = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    with torch.inference_mode():
        out = backend.model.generate(
            input_ids=rows, attention_mask=mask, generation_config=backend.generation_config
        )
    assert out[:, width:].tolist() != good


def test_plan_batches_respects_budget():
    lengths = [5, 50, 7, 30, 30, 200, 1]
    batches = plan_batches(lengths, max_new_tokens=10, batch_tokens=130, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # over budget alone: a batch of one
    for b in batches[1:]:
        assert len(b) <= 3
        assert len(b) * (max(lengths[i] for i in b) + 10) <= 130


def test_pad_token_is_unk(demo_models):
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(demo_models["causal"]).pad_token is None
    tok = load_tokenizer(demo_models["causal"])
    assert tok.pad_token == tok.unk_token == "<unk>"
    backend = _backend(demo_models, "causal", "causal")
    assert backend.tokenizer.pad_token_id == backend.tokenizer.unk_token_id
    assert backend.generation_config.pad_token_id == backend.tokenizer.unk_token_id
    assert backend.tokenizer.padding_side == "left"


def test_token_count_stops_at_eos(demo_models):
    backend = _backend(demo_models, "causal", "causal")
    full = backend.generate_token_ids(QUERIES[:1])[0]
    backend.eos_ids = {full[3]}  # pretend a token the model emits is EOS
    cut = backend.generate(QUERIES[:1])
    assert cut.n_output_tokens == [full.index(full[3])]


def test_chat_template_prompt(demo_models):
    settings = GenerationSettings(max_new_tokens=4, chat_template=True)
    backend = _backend(demo_models, "causal", "causal", settings)
    ids = backend.encode(["hello there"])[0]
    bos = backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    assert backend.tokenizer.decode(ids) == "<s>[INST] hello there [/INST]"
    assert len(backend.generate(["hello there"]).texts) == 1
    with pytest.raises(ImhiBenchError, match="chat_template"):
        _backend(demo_models, "seq2seq-bart", "seq2seq", settings)


def test_seq2seq_truncates_to_position_limit(demo_models):
    backend = _backend(demo_models, "seq2seq-bart", "seq2seq")
    query = " ".join(f"w{i}" for i in range(1500))
    assert len(backend.encode([query])[0]) == 1024
    assert len(backend.generate([query, "hi"]).texts) == 2


def test_lora_merged_equals_unmerged_and_differs_from_base(demo_models):
    adapter, base = demo_models["lora-adapter"], demo_models["lora-base"]
    merged = _backend(demo_models, "lora-adapter", "lora", base="lora-base")
    tok = load_tokenizer(base)
    unmerged = HFGenerator(
        load_lora_model(adapter, base, SETTINGS, "cpu", merge=False), tok, SETTINGS
    )
    plain = _backend(demo_models, "lora-base", "causal")
    assert merged.generate_token_ids(QUERIES) == unmerged.generate_token_ids(QUERIES)
    assert merged.generate_token_ids(QUERIES) != plain.generate_token_ids(QUERIES)


def test_lora_tokenizer_location(demo_models, tmp_path):
    adapter, base = demo_models["lora-adapter"], demo_models["lora-base"]
    assert tokenizer_dir(adapter, base) == base
    copy = shutil.copytree(adapter, tmp_path / "adapter")
    shutil.copy(Path(base) / "tokenizer.json", copy)
    assert tokenizer_dir(str(copy), base) == str(copy)


def test_load_errors(demo_models, tmp_path):
    with pytest.raises(ImhiBenchError, match=r"unknown .* 'gpt'.*'causal'.*'lora'"):
        load_backend("gpt", model_dir="x", settings=SETTINGS)
    assert known_kinds() == ["api", "causal", "lora", "responses", "seq2seq"]
    with pytest.raises(ImhiBenchError, match="base_model_dir is required"):
        load_backend("lora", model_dir=demo_models["lora-adapter"], settings=SETTINGS)
    with pytest.raises(ImhiBenchError, match="only used by kind 'lora'"):
        _backend(demo_models, "causal", "causal", base="lora-base")
    with pytest.raises(ImhiBenchError, match="import_responses"):
        load_backend("responses", model_dir="r.csv", settings=SETTINGS)
    with pytest.raises(ImhiBenchError, match=f"{re.escape(str(tmp_path))}.*no config\\.json"):
        load_backend("causal", model_dir=str(tmp_path), settings=SETTINGS)
    with pytest.raises(ImhiBenchError, match=r"no adapter_config\.json"):
        _backend(demo_models, "causal", "lora", base="lora-base")
    with pytest.raises(ImhiBenchError, match="dtype"):
        GenerationSettings(dtype="int8")
    with pytest.raises(ImhiBenchError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)


# --- response import -------------------------------------------------------------------------


@pytest.fixture
def expert_dr() -> tuple[Path, list[str], list[str]]:
    """Upstream's example DR output (read in place) and the expert DR set's gold answers."""
    mirror = require_mirror()
    golds = list(pd.read_csv(mirror / EXPERT_DR)["gpt-3.5-turbo"])
    return mirror / UPSTREAM_DR, [f"DR-{i}" for i in range(len(golds))], golds


def test_import_upstream_csv(expert_dr):
    """The example's 35 goldens are the expert DR set's gpt-3.5-turbo answers, in order."""
    path, row_ids, golds = expert_dr
    responses = import_responses(str(path), row_ids, golds)
    assert len(responses) == len(golds) == 35
    assert responses == list(pd.read_csv(path)["generated_text"])


def test_import_upstream_csv_mismatches(expert_dr, tmp_path):
    path, row_ids, golds = expert_dr
    wrong = [*golds[:5], "No. Reasoning: something else.", *golds[6:]]
    one_row = r"DR\.csv: 'goldens' differs .* in 1 row\(s\):\n  row 6 \(row_id DR-5\)"
    with pytest.raises(ImhiBenchError, match=one_row):
        import_responses(str(path), row_ids, wrong)
    with pytest.raises(ImhiBenchError, match="35 rows, but the test file has 34"):
        import_responses(str(path), row_ids[:34], golds[:34])
    table = pd.read_csv(path)
    table.loc[7, "generated_text"] = ""
    table.to_csv(tmp_path / "up.csv", index=False)
    # an empty answer is kept as empty text (the rule of imhibench evaluate too)
    assert import_responses(str(tmp_path / "up.csv"), row_ids, golds)[7] == ""


def test_import_row_id_parquet(tmp_path):
    table = pd.DataFrame({"row_id": ["c", "x", "a", "b"], "response": ["C", "X", "A", "B"]})
    path = tmp_path / "r.parquet"
    table.to_parquet(path)
    assert import_responses(str(path), ["a", "b", "c"], ["", "", ""]) == ["A", "B", "C"]
    with pytest.raises(ImhiBenchError, match=r"r\.parquet: 2 row_ids missing, e\.g\. \['d', 'e'\]"):
        import_responses(str(path), ["a", "d", "e"], ["", "", ""])
    table.loc[1, "response"] = None
    table.to_parquet(path)
    assert import_responses(str(path), ["a", "x"], ["", ""]) == ["A", ""]


def test_import_upstream_escapes(tmp_path):
    """IMHI.py writes its CSVs with escapechar="\\"; backslashes must survive the import."""
    path = tmp_path / "out.csv"
    golds = ['No. Reasoning: a "quoted" \\ gold.', "Yes. Reasoning: plain."]
    texts = ["x \\n y", 'None, "really"']
    pd.DataFrame({"goldens": golds, "generated_text": texts}).to_csv(
        path, index=False, escapechar="\\"
    )
    assert import_responses(str(path), ["a", "b"], golds) == texts


def test_import_row_id_csv_errors(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("row_id,response\n1,yes\n2,\n3,None\n")
    assert import_responses(str(path), ["1", "3"], ["g", "g"]) == ["yes", "None"]
    assert import_responses(str(path), ["2"], ["g"]) == [""]
    path.write_text("row_id,response\n1,yes\n1,no\n")
    with pytest.raises(ImhiBenchError, match="duplicate row_id"):
        import_responses(str(path), ["1"], ["g"])
    path.write_text("id,text\n1,yes\n")
    with pytest.raises(ImhiBenchError, match="expected goldens,generated_text"):
        import_responses(str(path), ["1"], ["g"])
    with pytest.raises(ImhiBenchError, match="not found"):
        import_responses(str(tmp_path / "none.csv"), ["1"], ["g"])
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ImhiBenchError, match=r"bad\.parquet: unreadable"):
        import_responses(str(tmp_path / "bad.parquet"), ["1"], ["g"])


def test_greedy_even_if_the_checkpoint_samples(demo_models, tmp_path):
    """Llama-2-chat checkpoints ship do_sample=True, temperature 0.6, top_p 0.9: ignored."""
    import json

    copy = shutil.copytree(demo_models["causal"], tmp_path / "sampling")
    config_path = copy / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(do_sample=True, temperature=0.6, top_p=0.9, max_length=4096)
    config_path.write_text(json.dumps(config))
    sampling = load_backend("causal", model_dir=str(copy), settings=SETTINGS, device="cpu")
    assert sampling.model.generation_config.do_sample  # the checkpoint asks for sampling
    assert not sampling.generation_config.do_sample and sampling.generation_config.num_beams == 1
    assert sampling.generation_config.max_new_tokens == SETTINGS.max_new_tokens
    expected = _backend(demo_models, "causal", "causal").generate_token_ids(QUERIES)
    for seed in (0, 1):
        seeded = GenerationSettings(**{**SETTINGS.__dict__, "seed": seed})
        sampling.settings = seeded
        assert sampling.generate_token_ids(QUERIES) == expected


def test_batch_callback_and_prompt_lengths(demo_models):
    settings = GenerationSettings(max_new_tokens=10, batch_tokens=100_000, max_batch_size=2)
    backend = _backend(demo_models, "causal", "causal", settings)
    calls: list[tuple[int, int]] = []
    result = backend.generate(QUERIES, on_batch=lambda rows, tokens: calls.append((rows, tokens)))
    assert [rows for rows, _ in calls] == [2, 2, 1]
    assert sum(tokens for _, tokens in calls) == sum(result.n_output_tokens)
    assert backend.prompt_lengths(QUERIES) == [len(x) for x in backend.encode(QUERIES)]
