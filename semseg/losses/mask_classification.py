"""Mask2Former's set-prediction loss (Cheng et al., CVPR 2022, "Masked-attention Mask Transformer for Universal
Image Segmentation"), with the ignore index honoured.

A mask-classification model predicts Q (class, mask) pairs per image instead of
per-pixel logits. The loss turns each target label map into its set of class
masks (one binary mask per class present), matches queries to them one to one
with the Hungarian algorithm on ``class_weight * -p(class) + mask_weight * BCE
+ dice_weight * dice`` (computed on ``num_points`` random points), then adds

* ``class_weight`` x cross-entropy of every query's class, unmatched queries
  labelled "no object" with weight ``no_object_weight``;
* ``mask_weight`` x sigmoid BCE and ``dice_weight`` x dice loss of each matched
  mask, on ``num_points`` points chosen by uncertainty (``importance_sample_ratio``
  of them among ``oversample_ratio`` x as many random ones), divided by the
  number of target masks;

for the final decoder layer and every intermediate one (deep supervision).

This follows transformers' ``Mask2FormerLoss`` and ``Mask2FormerHungarianMatcher``
step for step (and draws the same random numbers, so the two agree exactly on
targets without ignored pixels: ``tests/test_models_transformers.py``).
It is written here, not called, for one reason: transformers' version turns
ignored pixels into background of every mask, which trains the model to
predict "nothing" wherever the labels are missing. Here each point carries a
weight, the ignore-free share of the pixels it samples, in the matching cost
and in the mask losses: pixels labelled ``ignore_index`` (and the padding to
the model's stride) count in neither. Class weights, when given, weight the
classification term like ``no_object_weight`` weights "no object".
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.meta import check_ignore_index, check_num_classes

# transformers' Mask2FormerConfig defaults, which are the paper's
SET_LOSS_DEFAULTS: dict[str, float] = {
    "class_weight": 2.0,
    "mask_weight": 5.0,
    "dice_weight": 5.0,
    "no_object_weight": 0.1,
    "num_points": 12544,
    "oversample_ratio": 3.0,
    "importance_sample_ratio": 0.75,
}


def sample_points(features: Tensor, points: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Bilinear samples of ``features`` [N, C, H, W] at ``points`` [N, P, 2] (x, y in 0..1) -> [N, C, P]."""
    return F.grid_sample(features, 2.0 * points[:, :, None] - 1.0, padding_mode=padding_mode, align_corners=False)[..., 0]


class MaskClassificationLoss(nn.Module):
    """The set-prediction loss of a mask-classification model's outputs (see the module docstring).

    ``outputs``: what the model's ``forward_aux`` returns: ``class_queries``
    float [N, Q, C+1] (the last column is "no object"), ``mask_queries`` float
    [N, Q, h, w] over the input padded to ``size_divisor``, and optionally
    ``layer_class_queries`` [L, N, Q, C+1], ``layer_mask_queries`` [L, N, Q, h, w]
    of the intermediate decoder layers. ``target``: long [N, H, W].
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, size_divisor: int = 1,
                 class_weights: Sequence[float] | None = None, **settings: Any) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.ignore_index = check_ignore_index(ignore_index, num_classes)
        unknown = sorted(set(settings) - set(SET_LOSS_DEFAULTS))
        if unknown:
            raise SemsegError(f"the set-prediction loss has no setting(s) {', '.join(unknown)}; "
                              f"it takes: {', '.join(SET_LOSS_DEFAULTS)}")
        values = {**SET_LOSS_DEFAULTS, **settings}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SemsegError(f"set-prediction loss setting '{key}' must be a number >= 0, got {value!r}")
        if not 0 <= values["importance_sample_ratio"] <= 1 or values["oversample_ratio"] < 1 or values["num_points"] < 1:
            raise SemsegError("set-prediction loss: importance_sample_ratio must lie in [0, 1], oversample_ratio >= 1, "
                              "num_points >= 1")
        self.class_weight, self.mask_weight, self.dice_weight = (float(values[k]) for k in ("class_weight", "mask_weight", "dice_weight"))
        self.num_points = int(values["num_points"])
        self.oversample_ratio = float(values["oversample_ratio"])
        self.importance_sample_ratio = float(values["importance_sample_ratio"])
        self.size_divisor = int(size_divisor)
        weights = torch.ones(num_classes + 1)
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise SemsegError(f"class_weights has {len(class_weights)} values for {num_classes} classes")
            weights[:num_classes] = torch.as_tensor([float(w) for w in class_weights])
        weights[-1] = float(values["no_object_weight"])
        self.register_buffer("empty_weight", weights, persistent=False)

    # ------------------------------------------------------------------ targets
    def _targets(self, target: Tensor, mask_size: tuple[int, int]) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Per image: the classes present, their binary masks [K, Hp, Wp], and the valid map [N, 1, Hp, Wp]."""
        if target.ndim != 3:
            raise SemsegError(f"target must be [N, H, W] class ids, got shape {tuple(target.shape)}")
        height, width = target.shape[-2:]
        divisor = self.size_divisor
        padded_h, padded_w = -(-height // divisor) * divisor, -(-width // divisor) * divisor
        if padded_h * mask_size[1] != padded_w * mask_size[0]:
            raise SemsegError(
                f"the mask queries ({mask_size[0]}x{mask_size[1]}) do not cover the {padded_h}x{padded_w} padded "
                f"input; the loss's size_divisor ({divisor}) must be the model's"
            )
        target = F.pad(target, (0, padded_w - width, 0, padded_h - height), value=self.ignore_index)
        valid = target != self.ignore_index
        outside = valid & ((target < 0) | (target >= self.num_classes))
        if outside.any():
            values = sorted(set(target[outside].unique().tolist()))[:10]
            raise SemsegError(f"target holds values {values} that are neither a class id "
                              f"(0..{self.num_classes - 1}) nor the ignore index {self.ignore_index}")
        classes, masks = [], []
        for labels, keep in zip(target, valid):
            present = labels[keep].unique()
            classes.append(present)
            masks.append((labels[None] == present[:, None, None]).float())
        return classes, masks, valid[:, None].float()

    # ------------------------------------------------------------------ matching
    @torch.no_grad()
    def _match(self, class_logits: Tensor, mask_logits: Tensor, classes: list[Tensor], masks: list[Tensor],
               valid: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(query indices, target indices) per image, by the Hungarian algorithm on the weighted cost."""
        from scipy.optimize import linear_sum_assignment

        indices = []
        for i in range(class_logits.shape[0]):
            cost_class = -class_logits[i].softmax(-1)[:, classes[i]]
            points = torch.rand(1, self.num_points, 2, device=mask_logits.device)
            # one set of points for every query and target of the image: [K, P], [Q, P], [P]
            target_points = sample_points(masks[i][:, None], points.repeat(masks[i].shape[0], 1, 1))[:, 0]
            pred_points = sample_points(mask_logits[i][:, None], points.repeat(mask_logits.shape[1], 1, 1))[:, 0]
            # the valid map's edge extends outward: a point by the image border samples no "outside"
            weight = sample_points(valid[i:i + 1], points, "border")[0, 0]
            total = weight.sum().clamp(min=1.0)
            positive = F.binary_cross_entropy_with_logits(pred_points, torch.ones_like(pred_points), reduction="none")
            negative = F.binary_cross_entropy_with_logits(pred_points, torch.zeros_like(pred_points), reduction="none")
            cost_mask = ((positive * weight) @ target_points.T + (negative * weight) @ (1 - target_points).T) / total
            probs = pred_points.sigmoid() * weight
            numerator = 2 * probs @ target_points.T
            denominator = probs.sum(-1)[:, None] + (target_points * weight).sum(-1)[None, :]
            cost_dice = 1 - (numerator + 1) / (denominator + 1)
            cost = self.mask_weight * cost_mask + self.class_weight * cost_class + self.dice_weight * cost_dice
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    # ------------------------------------------------------------------ the terms
    def _class_loss(self, class_logits: Tensor, classes: list[Tensor], indices: list[tuple[Tensor, Tensor]]) -> Tensor:
        batch, queries, _ = class_logits.shape
        labels = torch.full((batch, queries), self.num_classes, dtype=torch.int64, device=class_logits.device)
        for i, (rows, cols) in enumerate(indices):
            labels[i, rows.to(labels.device)] = classes[i][cols.to(labels.device)]
        return F.cross_entropy(class_logits.transpose(1, 2), labels, weight=self.empty_weight.to(class_logits.dtype))

    def _mask_losses(self, mask_logits: Tensor, masks: list[Tensor], valid: Tensor,
                     indices: list[tuple[Tensor, Tensor]], num_masks: float) -> tuple[Tensor, Tensor]:
        device = mask_logits.device
        image = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(indices)]).to(device)
        rows = torch.cat([rows for rows, _ in indices]).to(device)
        if rows.numel() == 0:  # no labelled pixel in the batch: nothing to match, keep the graph
            zero = mask_logits.sum() * 0
            return zero, zero
        pred = mask_logits[image, rows][:, None]
        target = torch.cat([masks[i][cols.to(device)] for i, (_, cols) in enumerate(indices)])[:, None]
        with torch.no_grad():
            points = self._uncertain_points(pred)
            labels = sample_points(target, points)[:, 0]
            weight = sample_points(valid[image], points, "border")[:, 0]
        logits = sample_points(pred, points)[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        bce = ((bce * weight).sum(1) / weight.sum(1).clamp(min=1.0)).sum() / num_masks
        probs = logits.sigmoid() * weight
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + (labels * weight).sum(-1) + 1)
        return bce, dice.sum() / num_masks

    def _uncertain_points(self, logits: Tensor) -> Tensor:
        """Mask2Former's point sampling: the most uncertain of many random points, plus some random ones."""
        count = logits.shape[0]
        sampled = int(self.num_points * self.oversample_ratio)
        candidates = torch.rand(count, sampled, 2, device=logits.device)
        uncertainty = -sample_points(logits, candidates).abs()
        uncertain = int(self.importance_sample_ratio * self.num_points)
        best = torch.topk(uncertainty[:, 0, :], k=uncertain, dim=1)[1]
        points = torch.gather(candidates, 1, best[..., None].expand(-1, -1, 2))
        if self.num_points > uncertain:
            points = torch.cat([points, torch.rand(count, self.num_points - uncertain, 2, device=logits.device)], dim=1)
        return points

    def layer_loss(self, class_logits: Tensor, mask_logits: Tensor, classes: list[Tensor], masks: list[Tensor],
                   valid: Tensor) -> Tensor:
        """The weighted loss of one decoder layer's predictions."""
        indices = self._match(class_logits, mask_logits, classes, masks, valid)
        num_masks = max(float(sum(len(c) for c in classes)), 1.0)
        bce, dice = self._mask_losses(mask_logits, masks, valid, indices, num_masks)
        return (self.mask_weight * bce + self.dice_weight * dice
                + self.class_weight * self._class_loss(class_logits, classes, indices))

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> Tensor:
        """The loss of the final layer plus that of every intermediate layer: a scalar."""
        for key in ("class_queries", "mask_queries"):
            if key not in outputs:
                raise SemsegError(f"the set-prediction loss needs the model's '{key}' output (forward_aux of a "
                                  "mask-classification model such as Mask2Former)")
        class_logits, mask_logits = outputs["class_queries"].float(), outputs["mask_queries"].float()
        if class_logits.shape[-1] != self.num_classes + 1:
            raise SemsegError(f"the model predicts {class_logits.shape[-1] - 1} classes but the loss was built for "
                              f"{self.num_classes}")
        classes, masks, valid = self._targets(target.long(), tuple(mask_logits.shape[-2:]))
        loss = self.layer_loss(class_logits, mask_logits, classes, masks, valid)
        layers_class, layers_mask = outputs.get("layer_class_queries"), outputs.get("layer_mask_queries")
        if layers_class is not None and layers_mask is not None:
            for layer_class, layer_mask in zip(layers_class, layers_mask):
                loss = loss + self.layer_loss(layer_class.float(), layer_mask.float(), classes, masks, valid)
        return loss
