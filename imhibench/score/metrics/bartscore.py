"""BARTScore (Yuan et al., 2021): mean log-likelihood of a target text given a source text.

A faithful re-implementation of ``BARTScorer`` from neulab/BARTScore ``bart_score.py``, which
MentaLLaMA's ``src/score.py`` calls as ``score(srcs=generated, tgts=gold, batch_size=4)`` with
``facebook/bart-large-cnn`` plus the ParaBank2 weights ``bart_score.pth``, in float32.

Differences from the reference: rows are batched in length order (results are returned in
input order), the decoder input is built explicitly with ``shift_tokens_right`` (what BART does
internally when given ``labels``, minus the unused internal loss), and a CUDA out-of-memory
error halves the batch instead of calling ``exit(0)``; it is re-raised once a batch of one row
does not fit. These change a score by float rounding only (padding is masked), as long as the
model runs in float32, the default. ``dtype="bfloat16"`` (opt-in) runs the model in bf16:
faster, but every score moves (bf16 keeps 8 bits of mantissa), so such numbers are not the
paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BartForConditionalGeneration
from transformers.models.bart.modeling_bart import shift_tokens_right

from imhibench.common.devices import release_cached_memory
from imhibench.common.errors import ImhiBenchError
from imhibench.common.progress import Progress


def resolve_dtype(dtype: torch.dtype | str, what: str) -> torch.dtype:
    """A torch dtype from its name (``float32``, ``bfloat16``, ``float16``) or itself."""
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ImhiBenchError(f"{what}: unknown dtype {dtype!r} (e.g. 'float32', 'bfloat16')")
    return resolved


def _load_weights(model: BartForConditionalGeneration, weights_file: str | Path) -> None:
    """Load a saved ``state_dict`` (ParaBank2 ``bart_score.pth``) into ``model``.

    Every key must fit; a key may be missing only if it names a weight tied to one that is
    loaded (``lm_head.weight`` and the embeddings share ``model.shared.weight``), since files
    saved by other transformers versions may list tied weights once.
    """
    path = Path(weights_file)
    if not path.is_file():
        raise ImhiBenchError(f"bart_score: weights_file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/zip/runtime errors for a bad file
        raise ImhiBenchError(f"bart_score: cannot load weights_file {str(path)!r}: {err}") from err
    if not isinstance(state, dict):
        raise ImhiBenchError(f"bart_score: weights_file {str(path)!r} is not a state_dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ImhiBenchError(
            f"bart_score: weights_file {str(path)!r} does not fit the checkpoint: {err}"
        ) from err
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise ImhiBenchError(
            f"bart_score: weights_file {str(path)!r} does not fit the checkpoint: "
            f"missing {untied[:5]}, unexpected {unexpected[:5]}"
        )


class BARTScorer:
    """Scores ``tgt`` given ``src`` as the mean token log-probability under a BART model."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        max_length: int = 1024,
        weights_file: str | Path | None = None,
        dtype: torch.dtype | str = "float32",
    ) -> None:
        if not Path(checkpoint).is_dir():
            raise ImhiBenchError(f"bart_score: checkpoint directory {str(checkpoint)!r} not found")
        if not isinstance(max_length, int) or max_length < 1:
            raise ImhiBenchError(f"bart_score: max_length must be a positive int, got {max_length}")
        self.device = device
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        model = BartForConditionalGeneration.from_pretrained(str(checkpoint))
        if weights_file is not None:
            _load_weights(model, weights_file)
        self.model = model.to(device=device, dtype=resolve_dtype(dtype, "bart_score")).eval()
        self.pad_token_id = self.model.config.pad_token_id
        if self.pad_token_id is None or self.tokenizer.pad_token_id is None:
            raise ImhiBenchError(f"bart_score: checkpoint {str(checkpoint)!r} has no pad token")

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize, truncate to ``max_length`` and right-pad, as the reference does."""
        enc = self.tokenizer(
            texts,
            max_length=self.max_length,
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in enc.items()}

    def _score_batch(self, srcs: list[str], tgts: list[str]) -> list[float]:
        """Return ``-NLL(tgt | src) / len(tgt)`` for one batch."""
        src = self._encode(srcs)
        tgt = self._encode(tgts)
        tgt_ids = tgt["input_ids"]
        tgt_len = tgt["attention_mask"].sum(dim=1)
        if bool((tgt_len == 0).any()):
            raise ImhiBenchError("bart_score: a reference tokenized to zero tokens")
        config = self.model.config
        decoder_input_ids = shift_tokens_right(
            tgt_ids, config.pad_token_id, config.decoder_start_token_id
        )
        logits = self.model(
            input_ids=src["input_ids"],
            attention_mask=src["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        ).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        nll = torch.nn.functional.nll_loss(
            log_probs.view(-1, log_probs.size(-1)),
            tgt_ids.view(-1),
            ignore_index=self.pad_token_id,
            reduction="none",
        ).view(tgt_ids.size(0), -1)
        return (-(nll.sum(dim=1) / tgt_len)).tolist()

    def score(self, srcs: Sequence[str], tgts: Sequence[str], batch_size: int = 4) -> list[float]:
        """Score each ``tgts[i]`` given ``srcs[i]``; higher (closer to 0) is better."""
        if len(srcs) != len(tgts):
            raise ImhiBenchError(f"bart_score: {len(srcs)} sources but {len(tgts)} targets")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ImhiBenchError(f"bart_score: batch_size must be a positive int, got {batch_size}")
        order = sorted(range(len(srcs)), key=lambda i: len(srcs[i]) + len(tgts[i]), reverse=True)
        scores = [0.0] * len(srcs)
        progress = Progress("BARTScore", len(srcs), count_tokens=False)
        start, size = 0, batch_size
        with torch.inference_mode():
            while start < len(order):
                rows = order[start : start + size]
                try:
                    batch = self._score_batch([srcs[i] for i in rows], [tgts[i] for i in rows])
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise
                    batch = None
                if batch is None:
                    size //= 2
                    release_cached_memory()  # outside the handler: its traceback held the tensors
                    continue
                for row, value in zip(rows, batch, strict=True):
                    scores[row] = value
                start += len(rows)
                progress.batch(len(rows), 0)
        progress.log("done: ")
        return scores
