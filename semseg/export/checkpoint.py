"""An inference checkpoint: the weights (float16 on request) and the metadata, no training state; checked on reload."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from semseg.checkpoint import save_checkpoint
from semseg.export.parity import compare_logits, export_progress, fail_unless_parity, parity_inputs
from semseg.io import staged_path
from semseg.meta import ModelMeta
from semseg.models.factory import load_model
from semseg.models.weights import int8_weights
from semseg.predict.functional import Size

log = logging.getLogger(__name__)

# what an inference checkpoint keeps of a training checkpoint besides the model: how it was made
PROVENANCE_KEYS = ("config", "metrics", "best_miou", "best_epoch", "epoch", "class_weights")


def export_checkpoint(
    model: nn.Module, path: str | os.PathLike, half: bool = False, provenance: dict[str, Any] | None = None,
    int8: bool = False,
) -> Path:
    """Write an inference checkpoint: the weights (float16 with ``half``: half the size) and the metadata.

    ``int8``: the large convolution and linear weights in int8 with one scale per output channel, the
    rest in float16 (:func:`semseg.models.weights.int8_weights`; about a third of float32's size for
    a convolutional network); they load back as float32 weights and run in float32.

    It loads like any semseg checkpoint (:func:`semseg.models.load_model`,
    ``--checkpoint``), back into float32 weights; no optimizer state is kept,
    nor the heads that serve training only (``model.training_only_prefixes``:
    aux heads, BiSeNetV2's boosters, PIDNet's boundary head), which prediction
    never runs; fine-tuning from the file starts them afresh.
    ``provenance``: entries of the training checkpoint to keep (its config and scores).
    """
    training_only = tuple(getattr(model, "training_only_prefixes", ()))
    weights = {
        key: value.detach().cpu().half() if half and value.is_floating_point() else value.detach().cpu()
        for key, value in model.state_dict().items()
        if not key.startswith(training_only)
    }
    state = {key: value for key, value in (provenance or {}).items() if key in PROVENANCE_KEYS}
    state.update(
        model_name=model.model_name, model_kwargs=dict(model.model_kwargs),
        model_meta=model.pretrained_cfg.to_dict(), model=weights,
    )
    if int8:
        state["model"], state["int8_weights"], state["int8_scales"] = int8_weights(weights)
    save_checkpoint(state, path)
    return Path(path)


def export_checkpoint_checked(
    model: nn.Module, path: str | os.PathLike, input_size: Size, half: bool = False, provenance: dict[str, Any] | None = None,
    int8: bool = False,
) -> dict[str, Any]:
    """Export to a temporary file, reload it, check its logits against ``model``, then replace ``path``.

    A failed export or check raises and leaves ``path`` as it was.
    """
    path = Path(path)
    meta = ModelMeta.of(model)
    inputs = parity_inputs(input_size, meta.mean, meta.std)
    with staged_path(path) as staged, export_progress(1 + len(inputs), log) as progress:
        export_checkpoint(model, staged, half, provenance, int8)
        progress.update(1, check="checkpoint written")
        report = compare_logits(model, load_model(staged), inputs, f"{path}:", progress)
        fail_unless_parity(report, path, "the exported weights agree with the original")
    return report
