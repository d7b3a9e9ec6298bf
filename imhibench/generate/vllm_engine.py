"""The ``vllm`` engine (optional extra ``vllm``; GPU only). NOT RUN HERE: no GPU was available.

Follows vLLM's documented offline API: ``LLM(...)`` with ``tensor_parallel_size`` = the job's
GPUs and prefix caching, greedy ``SamplingParams(temperature=0, max_tokens=..., seed=...)``, the
whole shard handed over in one ``generate`` call, prompts as token ids (our tokenizer, so prompts
are identical to the other engines'), a LoRA adapter through ``LoRARequest``. vLLM's greedy
answers can differ from Hugging Face's (other kernels); Hugging Face is the reference:
compare with ``scripts/compare_engines.py`` before relying on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import BatchCallback, GenerationResult, GenerationSettings, cut_at_eos
from imhibench.generate.engines import job_gpus

# settings dtype -> vLLM dtype; ``auto`` = bfloat16 on GPU, as the other engines.
_VLLM_DTYPES = {"auto": "bfloat16", "float32": "float32", "bfloat16": "bfloat16",
                "float16": "float16"}  # fmt: skip
#: The values vLLM accepts for ``max_lora_rank`` (``MaxLoRARanks``, a pydantic-validated
#: ``Literal`` in vllm/config/lora.py); an adapter of a smaller rank is served zero-padded.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Model dtypes vLLM's LoRA kernels take: their LoRA weights must be float16 or bfloat16
#: (vllm/lora/ops/triton_ops, ``LoRADType``); with ``lora_dtype`` "auto" they take the model's.
VLLM_LORA_DTYPES = ("float16", "bfloat16")


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImhiBenchError(
            "engine 'vllm' needs the optional extra: pip install 'imhi-bench[vllm]'"
        ) from err
    return vllm


def vllm_dtype(dtype: str) -> str:
    """The vLLM dtype of a settings ``dtype``."""
    return _VLLM_DTYPES[dtype]


def lora_dtype_problem(dtype: str) -> str | None:
    """Why vLLM cannot serve a LoRA adapter in settings ``dtype``, or None when it can."""
    if vllm_dtype(dtype) in VLLM_LORA_DTYPES:
        return None
    return (
        f"engine 'vllm' serves LoRA adapters in float16 or bfloat16 only (its LoRA kernels "
        f"refuse {vllm_dtype(dtype)}); set dtype bfloat16 for this model, or use engine static "
        "or continuous to generate in float32"
    )


def max_lora_rank(lora_dir: str) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds the adapter's rank ``r``."""
    path = Path(lora_dir) / "adapter_config.json"
    rank = int(json.loads(path.read_text())["r"])
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fitting:
        raise ImhiBenchError(
            f"{path}: rank r={rank} is above vLLM's largest, {max(VLLM_LORA_RANKS)}"
        )
    return fitting[0]


class VLLMGenerator:
    """Greedy generation with vLLM; ``lora_dir`` serves an adapter over ``model_dir``."""

    def __init__(
        self,
        model_dir: str,
        tokenizer,
        settings: GenerationSettings,
        device: str,
        lora_dir: str | None = None,
    ):
        if not device.startswith("cuda"):
            raise ImhiBenchError(f"engine 'vllm' needs a GPU; device is {device!r}")
        if settings.decoding != "greedy":
            raise ImhiBenchError("engine 'vllm' supports greedy decoding only")
        if lora_dir and lora_dtype_problem(settings.dtype):
            raise ImhiBenchError(f"{lora_dir}: {lora_dtype_problem(settings.dtype)}")
        vllm = _import_vllm()
        self.tokenizer, self.settings = tokenizer, settings
        lora = {"enable_lora": True, "max_lora_rank": max_lora_rank(lora_dir)} if lora_dir else {}
        self.llm = vllm.LLM(
            model=model_dir,
            tokenizer=tokenizer.name_or_path,
            dtype=vllm_dtype(settings.dtype),
            seed=settings.seed,
            tensor_parallel_size=max(job_gpus(), 1),
            enable_prefix_caching=True,
            **lora,
        )
        self.params = vllm.SamplingParams(
            temperature=0,
            max_tokens=settings.max_new_tokens,
            min_tokens=settings.min_new_tokens,
            seed=settings.seed,
        )
        self.lora_request = None
        if lora_dir:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("adapter", 1, lora_dir)
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos}
        #: Provenance: vLLM decodes greedily whatever the checkpoint's generation config says.
        self.decoding_provenance = {"decoding": "greedy", "engine": "vllm", "seed": settings.seed}

    def _prompts(self, queries: list[str]) -> list[list[int]]:
        if self.settings.chat_template:
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
                )
                for q in queries
            ]
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return self.tokenizer(list(queries))["input_ids"]

    def prompt_lengths(self, queries: list[str]) -> list[int]:
        return [len(x) for x in self._prompts(queries)]

    def generate(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> GenerationResult:
        prompts = [{"prompt_token_ids": ids} for ids in self._prompts(queries)]
        outputs = self.llm.generate(
            prompts, self.params, lora_request=self.lora_request, use_tqdm=False
        )
        ids = [cut_at_eos(list(o.outputs[0].token_ids), self.eos_ids) for o in outputs]
        if on_batch is not None:
            on_batch(len(ids), sum(len(x) for x in ids))
        texts = [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        return GenerationResult(texts, [len(x) for x in ids])
