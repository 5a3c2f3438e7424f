"""One training step's forward and loss, shared by the loop and by the precision measurement at a run's start.

The loss is torchvision's recipe: ``criterion(out, masks)`` plus ``train.aux_weight *
criterion(aux, masks)`` for each aux head (``"aux"``, ``"aux2"``, ...), plus the boundary
loss for models with a ``"boundary"`` head.
"""

from __future__ import annotations

import torch
from torch import nn

from semseg.losses.boundary import boundary_loss


class TrainForward(nn.Module):
    """What DDP wraps: the model's forward with aux outputs, so gradient sync sees every head."""

    def __init__(self, model: nn.Module, with_aux: bool) -> None:
        super().__init__()
        self.model = model
        self.with_aux = with_aux

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.with_aux:
            return self.model.forward_aux(images)
        return {"out": self.model(images)}


def train_forward(model: nn.Module, aux_weight: float) -> TrainForward:
    """``model``'s training forward: with its aux heads where their loss counts (``aux_weight`` > 0), and always
    for set-prediction models, which train on the queries that only ``forward_aux`` returns. Without them,
    the training-only heads' weights are set not to require gradients."""
    with_aux = bool(getattr(model, "has_aux", False)) and (aux_weight > 0 or getattr(model, "set_prediction", False))
    if not with_aux:
        # the heads only forward_aux runs get no gradient: they are held still (requires_grad off), as DDP
        # needs a gradient for every weight that asks for one (it stops the run otherwise)
        training_only = tuple(getattr(model, "training_only_prefixes", ()))
        for name, param in model.named_parameters():
            if training_only and name.startswith(training_only):
                param.requires_grad_(False)
    return TrainForward(model, with_aux)


def training_loss(outputs: dict[str, torch.Tensor], masks: torch.Tensor, criterion: nn.Module, aux_weight: float,
                  ignore_index: int) -> torch.Tensor:
    """The loss of one batch: ``criterion(out, masks)``, plus ``aux_weight * criterion(aux, masks)`` for
    every auxiliary head (``"aux"``, ``"aux2"``, ...: deep supervision), plus PIDNet's boundary loss
    when the model has a ``"boundary"`` head. ``outputs`` is what ``forward_aux`` returns. For a
    mask-classification model (Mask2Former: ``"class_queries"`` among the outputs) ``criterion`` is
    its set-prediction loss, and takes the outputs whole.
    """
    if "class_queries" in outputs:  # a mask-classification model: its set-prediction loss takes the queries
        return criterion(outputs, masks)
    loss = criterion(outputs["out"].float(), masks)
    for key in [k for k in outputs if k.startswith("aux")]:
        loss = loss + aux_weight * criterion(outputs[key].float(), masks)
    if "boundary" in outputs:
        loss = loss + boundary_loss(outputs["boundary"], outputs["out"], masks, criterion, ignore_index)
    return loss
