"""Class weights from a dataset's pixel counts, for ``create_loss(..., class_weights=...)``.

- ``median_freq``: median-frequency balancing (Eigen & Fergus, ICCV 2015; used by
  SegNet, Badrinarayanan et al., TPAMI 2017). freq_c = pixels of class c / all
  pixels of the images where c is present; w_c = median(freq) / freq_c. The median
  is taken over the classes that occur (numpy's median: the mean of the two middle
  values for an even count). A class that never occurs gets weight 0: there is no
  frequency to balance, and no target pixel of it to weigh.
- ``sqrt_median_freq``: the square root of the median-frequency weights, a softer
  balance. Full median-frequency weights lift rare classes on frames like the
  training ones but over-predict them on unseen scenes (on CamVid's held-out
  sequences Pole, Sign and Pedestrian were predicted on 3-5x the pixels they cover
  and Building lost the difference); the square root keeps the order of the weights
  and shrinks their spread (BENCHMARKS.md, "Sequence-disjoint trials").
- ``enet``: ENet's weighting (Paszke et al., 2016): w_c = 1 / ln(c + p_c), with
  p_c = pixels of class c / all labelled pixels and c = 1.02, which bounds the
  weights to [1 / ln(1 + c), 1 / ln(c)] = [1.43, 50.5]. A class that never occurs
  gets the formula's value 1 / ln(c), the largest.

Inputs are per-class counts of length C (lists, numpy arrays or tensors), e.g.
``semseg.data.class_statistics(dataset)["class_pixels"]`` and ``["present_pixels"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from semseg.errors import SemsegError

Counts = Sequence[float] | np.ndarray | torch.Tensor

# the names train.class_weights and class_weights() accept
CLASS_WEIGHT_METHODS = ("median_freq", "sqrt_median_freq", "enet")


def _counts(values: Counts, name: str) -> np.ndarray:
    try:
        counts = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SemsegError(f"class weights: '{name}' must be per-class pixel counts, got {values!r}") from err
    if counts.ndim != 1 or counts.size == 0 or not np.isfinite(counts).all() or (counts < 0).any():
        raise SemsegError(f"class weights: '{name}' must be a non-empty list of counts >= 0, got {counts.tolist()}")
    return counts


def median_frequency_weights(class_pixels: Counts, present_pixels: Counts) -> torch.Tensor:
    """SegNet's median-frequency weights, ``float32[C]``; 0 for classes that never occur."""
    pixels, present = _counts(class_pixels, "class_pixels"), _counts(present_pixels, "present_pixels")
    if pixels.shape != present.shape:
        raise SemsegError(f"class weights: class_pixels has {pixels.size} classes but present_pixels has {present.size}")
    if (pixels > present).any():
        raise SemsegError("class weights: a class has more pixels than the images it occurs in (class_pixels > present_pixels)")
    occurs = pixels > 0
    if not occurs.any():
        raise SemsegError("class weights: no class has any pixel, there is nothing to balance")
    freq = np.zeros_like(pixels)
    freq[occurs] = pixels[occurs] / present[occurs]
    weights = np.zeros_like(pixels)
    weights[occurs] = np.median(freq[occurs]) / freq[occurs]
    return torch.tensor(weights, dtype=torch.float32)


def sqrt_median_frequency_weights(class_pixels: Counts, present_pixels: Counts) -> torch.Tensor:
    """The square root of :func:`median_frequency_weights`, ``float32[C]``; 0 for classes that never occur."""
    return median_frequency_weights(class_pixels, present_pixels).sqrt()


def enet_weights(class_pixels: Counts, c: float = 1.02) -> torch.Tensor:
    """ENet's ``1 / ln(c + p_class)`` weights, ``float32[C]``."""
    pixels = _counts(class_pixels, "class_pixels")
    if not c > 1:
        raise SemsegError(f"class weights: ENet's constant c must be > 1 (ln(c + p) must stay positive), got {c}")
    if pixels.sum() == 0:
        raise SemsegError("class weights: no class has any pixel, there is nothing to balance")
    share = pixels / pixels.sum()
    return torch.tensor(1.0 / np.log(c + share), dtype=torch.float32)


def class_weights(method: str, class_pixels: Counts, present_pixels: Counts | None = None) -> torch.Tensor:
    """Weights by name (one of :data:`CLASS_WEIGHT_METHODS`), ``float32[C]``; the median-frequency
    methods need ``present_pixels``."""
    if method in ("median_freq", "sqrt_median_freq"):
        if present_pixels is None:
            raise SemsegError(f"class weights '{method}' need present_pixels: the pixels of the images each class occurs in")
        weigh = median_frequency_weights if method == "median_freq" else sqrt_median_frequency_weights
        return weigh(class_pixels, present_pixels)
    if method == "enet":
        return enet_weights(class_pixels)
    raise SemsegError(f"unknown class weights {method!r}: expected {', '.join(CLASS_WEIGHT_METHODS)}")


def logit_adjustment(class_weights: Counts, alpha: float) -> tuple[float, ...]:
    """The per-class logit offset ``-alpha * log(w_c)`` that takes back ``alpha`` of a class-weighted loss's prior.

    A cross-entropy weighted by ``w_c`` is minimized by the posterior times ``w_c``, which moves the
    decision toward class c by ``log w_c`` in the logits; adding this offset undoes ``alpha`` of that
    (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021). ``alpha`` 0 keeps the trained
    decision, 1 removes the weights' prior entirely (BENCHMARKS.md measures both on held-out sequences).
    """
    weights = _counts(class_weights, "class weights")
    if not np.all(weights > 0):
        raise SemsegError(f"class weights must all be positive to adjust logits by their log, got {weights.tolist()}")
    if not 0 <= alpha <= 1:
        raise SemsegError(f"the logit adjustment must lie in 0..1 (the share of the class weights' prior taken back), got {alpha}")
    return tuple(float(-alpha * np.log(w)) for w in weights)
