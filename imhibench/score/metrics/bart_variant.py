"""How tables name a BARTScore variant. Kept apart from `bartscore` (torch, transformers): the
aggregate job names the variant of every table and loads no model."""

from __future__ import annotations


def variant_name(
    checkpoint_name: str, weights_sha256: str | None, parabank2_sha256: str | None
) -> str:
    """How tables name a BARTScore variant, from what was loaded: the checkpoint and the
    sha256 of the weights file (None: no file). ``bart-large-cnn + ParaBank2 weights`` only
    when that digest is ``parabank2_sha256``, the one recorded as ParaBank2's; another file is
    named by its digest, ``bart-large-cnn + unidentified weights file 0123456789ab``."""
    model = checkpoint_name.rstrip("/").rsplit("/", 1)[-1]
    if weights_sha256 is None:
        return f"{model}, no ParaBank2 weights"
    if weights_sha256 == parabank2_sha256:
        return f"{model} + ParaBank2 weights"
    return f"{model} + unidentified weights file {weights_sha256[:12]}"
