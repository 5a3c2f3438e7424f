"""``create_loss("0.5*focal+lovasz", num_classes)``: the loss of a run from one string.

Grammar (whitespace anywhere between tokens)::

    spec   := term ("+" term)*
    term   := [weight "*"] name          weight: a positive number (0.5, 2, 1e-1)
    name   := one of LOSSES

Keyword options go to every loss of the spec whose constructor takes them
(``label_smoothing`` to ce, ``thresh``/``min_kept`` to ohem, ``gamma``/``alpha`` to
focal, ``smooth`` to dice); an option no loss of the spec takes is an error, as are
class weights when no loss of the spec uses them.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import torch

from semseg.errors import SemsegError
from semseg.meta import check_ignore_index
from semseg.losses.base import SegLoss
from semseg.losses.cross_entropy import CrossEntropyLoss
from semseg.losses.dice import DiceLoss
from semseg.losses.focal import FocalLoss
from semseg.losses.lovasz import LovaszSoftmaxLoss
from semseg.losses.ohem import OhemCrossEntropyLoss

LOSSES: dict[str, type[SegLoss]] = {
    "ce": CrossEntropyLoss,
    "ohem": OhemCrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "lovasz": LovaszSoftmaxLoss,
}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*(?P<end>\+|$)")


def parse_spec(spec: str) -> list[tuple[float, str]]:
    """``"ce + 0.5*dice"`` -> ``[(1.0, "ce"), (0.5, "dice")]``."""
    if not isinstance(spec, str) or not spec.strip():
        raise SemsegError(f"loss spec {spec!r}: expected a loss name or a sum such as 'ce+0.5*dice'")
    terms, position = [], 0
    while position < len(spec):
        match = _TERM.match(spec, position)
        if match is None or (match["end"] == "+" and match.end() == len(spec)):
            raise SemsegError(f"loss spec {spec!r} is malformed at {spec[position:]!r}: expected terms like 'ce' or '0.5*dice' joined by '+'")
        weight = float(match["weight"]) if match["weight"] else 1.0
        if not (math.isfinite(weight) and weight > 0):
            raise SemsegError(f"loss spec {spec!r}: the weight of {match['name']!r} must be a positive number")
        terms.append((weight, match["name"]))
        position = match.end()
    names = [name for _, name in terms]
    unknown = [name for name in names if name not in LOSSES]
    if unknown:
        raise SemsegError(f"loss spec {spec!r}: unknown loss {unknown[0]!r}; known losses: {', '.join(LOSSES)}")
    repeated = {name for name in names if names.count(name) > 1}
    if repeated:
        raise SemsegError(f"loss spec {spec!r} names {sorted(repeated)[0]!r} twice: give it one weight")
    return terms


def loss_options(cls: type[SegLoss]) -> list[str]:
    """The keyword-only options of a loss, e.g. ``["gamma", "alpha"]`` for focal."""
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


class WeightedSum(SegLoss):
    """``sum(weight * loss)``; the inputs are checked once for all the terms."""

    def __init__(self, terms: list[tuple[float, SegLoss]], num_classes: int, ignore_index: int) -> None:
        super().__init__(num_classes, ignore_index)
        self.weights = [weight for weight, _ in terms]
        self.terms = torch.nn.ModuleList(loss for _, loss in terms)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return sum(weight * loss.compute(logits, target, valid) for weight, loss in zip(self.weights, self.terms))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={self.weights}"


def create_loss(
    spec: str,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    **kwargs: Any,
) -> SegLoss:
    """Build the loss of ``spec`` (see the module docstring): ``loss(logits[N,C,H,W], target[N,H,W]) -> scalar``.

    ``class_weights`` (``float[C]``) go to the losses that use them (ce, ohem, focal);
    ``kwargs`` to the losses that take them. A single unweighted name gives that loss
    itself, anything else a :class:`WeightedSum`.
    """
    terms = parse_spec(spec)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise SemsegError(f"create_loss: num_classes must be an integer >= 2 (softmax losses), got {num_classes!r}")
    num_classes = int(num_classes)
    ignore_index = check_ignore_index(ignore_index, num_classes, "create_loss: ignore_index")
    classes = [LOSSES[name] for _, name in terms]
    accepted = {option for cls in classes for option in loss_options(cls)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        takes = "; ".join(f"{name} takes {', '.join(loss_options(LOSSES[name])) or 'none'}" for _, name in terms)
        raise SemsegError(f"loss option {unknown[0]!r} is taken by no loss of {spec!r} ({takes})")
    if class_weights is not None and not any(cls.uses_class_weights for cls in classes):
        raise SemsegError(f"class weights are given but no loss of {spec!r} uses them (ce, ohem and focal do)")
    built = []
    for (weight, _), cls in zip(terms, classes):
        options = {key: value for key, value in kwargs.items() if key in loss_options(cls)}
        if cls.uses_class_weights:
            options["class_weights"] = class_weights
        built.append((weight, cls(num_classes, ignore_index, **options)))
    if len(built) == 1 and built[0][0] == 1.0:
        return built[0][1]
    return WeightedSum(built, num_classes, ignore_index)
