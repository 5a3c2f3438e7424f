"""Losses: references (torch CE, the authors' Lovász, hand-computed Dice and focal), the ignore
index, all-ignored batches, bf16 autocast, sum specs, class weights and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss as SmpDiceLoss
from segmentation_models_pytorch.losses import FocalLoss as SmpFocalLoss
from segmentation_models_pytorch.losses import LovaszLoss as SmpLovaszLoss

from semseg.errors import SemsegError
from semseg.losses import (
    CLASS_WEIGHT_METHODS,
    LOSSES,
    SegLoss,
    class_weights,
    create_loss,
    enet_weights,
    loss_options,
    median_frequency_weights,
    parse_spec,
    sqrt_median_frequency_weights,
)

IGNORE = 255
SPECS = [*LOSSES, "0.5*focal+lovasz", "ohem+0.5*lovasz", "ce+dice"]
# options for every spec: min_kept low enough that OHEM keeps only some pixels of a small batch
OPTIONS = {"gamma": 1.5, "min_kept": 20, "label_smoothing": 0.1}


def make(spec: str, num_classes: int = 5, **options):
    """create_loss with the OPTIONS (overridden by ``options``) that the losses of ``spec`` take."""
    taken = {option for _, name in parse_spec(spec) for option in loss_options(LOSSES[name])}
    return create_loss(spec, num_classes, **{k: v for k, v in {**OPTIONS, **options}.items() if k in taken})


def batch(n: int = 2, c: int = 5, h: int = 12, w: int = 10, ignored: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (requires_grad) and a target with about ``ignored`` of the pixels ignored."""
    gen = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(n, c, h, w, generator=gen)).requires_grad_()
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[torch.rand(n, h, w, generator=gen) < ignored] = IGNORE
    return logits, target


def grad_of(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.detach().clone().requires_grad_()
    value = loss_fn(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad


# ------------------------------------------------------------------ Lovász: the authors' formulation
def berman_lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Alg. 1 of Berman et al. as in their lovasz_losses.py: one class, ground truth sorted by error."""
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.float().cumsum(0)
    union = gts + (1 - gt_sorted).float().cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def berman_lovasz_softmax(probas: torch.Tensor, labels: torch.Tensor, ignore: int) -> torch.Tensor:
    """Their lovasz_softmax(probas, labels, classes='present', per_image=False, ignore=ignore)."""
    c = probas.size(1)
    probas = probas.permute(0, 2, 3, 1).reshape(-1, c)
    labels = labels.reshape(-1)
    keep = labels != ignore
    probas, labels = probas[keep], labels[keep]
    losses = []
    for cls in range(c):
        fg = (labels == cls).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probas[:, cls]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, berman_lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed,c,ignored", [(0, 5, 0.2), (1, 3, 0.0), (2, 11, 0.5)])
def test_lovasz_matches_the_authors_formulation(seed, c, ignored):
    logits, target = batch(c=c, ignored=ignored, seed=seed)
    target[target == c - 1] = 0  # one class absent: only present classes are averaged
    ours, our_grad = grad_of(create_loss("lovasz", c), logits, target)
    ref, ref_grad = grad_of(lambda x, t: berman_lovasz_softmax(x.softmax(1), t, IGNORE), logits, target)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(our_grad, ref_grad)
    smp_value = SmpLovaszLoss("multiclass", ignore_index=IGNORE)(logits, target)  # the authors' code, vendored by smp
    torch.testing.assert_close(ours, smp_value.detach())


def test_smp_lovasz_returns_an_empty_tensor_on_an_all_ignored_batch():
    """Why lovasz is written by hand (besides its per-class Python loop): not a scalar 0."""
    logits, _ = batch()
    target = torch.full((2, 12, 10), IGNORE)
    assert SmpLovaszLoss("multiclass", ignore_index=IGNORE)(logits, target).shape == (0, 5)
    assert create_loss("lovasz", 5)(logits, target).shape == ()


# ------------------------------------------------------------------ cross-entropy and OHEM
@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ce_equals_torch_cross_entropy(weights, smoothing):
    logits, target = batch()
    weight = None if weights is None else torch.tensor(weights)
    ours, our_grad = grad_of(create_loss("ce", 5, class_weights=weights, label_smoothing=smoothing), logits, target)
    ref, ref_grad = grad_of(
        lambda x, t: F.cross_entropy(x, t, weight=weight, ignore_index=IGNORE, label_smoothing=smoothing), logits, target
    )
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(our_grad, ref_grad)


def test_torch_cross_entropy_is_nan_on_an_all_ignored_batch():
    """Why ce divides by a clamped weight sum instead of calling torch's mean."""
    logits, _ = batch()
    target = torch.full((2, 12, 10), IGNORE)
    assert torch.isnan(F.cross_entropy(logits, target, ignore_index=IGNORE))
    assert create_loss("ce", 5)(logits, target).item() == 0.0


def ohem_reference(logits, target, thresh, min_kept, weight=None):
    """Keep the valid pixels with p_true < thresh, or the min_kept least confident: plain CE over them."""
    valid = target != IGNORE
    p_true = logits.detach().softmax(1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
    scores = p_true[valid]
    count = max(int((scores < thresh).sum()), min(min_kept, scores.numel()))
    order = scores.argsort()
    kept_valid = torch.zeros_like(scores, dtype=torch.bool)
    kept_valid[order[:count]] = True
    kept = torch.zeros_like(valid)
    kept[valid] = kept_valid
    return F.cross_entropy(logits, torch.where(kept, target, IGNORE), weight=weight, ignore_index=IGNORE)


@pytest.mark.parametrize(
    "thresh,min_kept",
    [(0.7, 0), (0.3, 0), (0.3, 150), (0.7, 10_000), (0.0, 5)],
    ids=["threshold", "strict-threshold", "min-kept-tops-up", "min-kept-above-valid-count", "min-kept-only"],
)
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 1.0, 4.0]])
def test_ohem_keeps_the_hard_pixels(thresh, min_kept, weights):
    logits, target = batch()
    weight = None if weights is None else torch.tensor(weights)
    loss = create_loss("ohem", 5, class_weights=weights, thresh=thresh, min_kept=min_kept)
    ours, our_grad = grad_of(loss, logits, target)
    ref, ref_grad = grad_of(lambda x, t: ohem_reference(x, t, thresh, min_kept, weight), logits, target)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(our_grad, ref_grad)
    assert (our_grad.abs().sum(1) > 0).sum() >= min(min_kept, int((target != IGNORE).sum()))


def test_ohem_with_everything_kept_is_ce():
    logits, target = batch()
    torch.testing.assert_close(create_loss("ohem", 5, thresh=1.0)(logits, target), create_loss("ce", 5)(logits, target))


# ------------------------------------------------------------------ focal
def test_focal_known_values():
    # pixel 1: p = (1/4, 3/4), target 1; pixel 2: p = (1/2, 1/2), target 0; pixel 3 ignored
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([[[1, 0, IGNORE]]])
    terms = [0.25**2 * -math.log(0.75), 0.5**2 * -math.log(0.5)]
    loss = create_loss("focal", 2, gamma=2)(logits, target)
    assert loss.item() == pytest.approx(sum(terms) / 2, rel=1e-6)
    loss = create_loss("focal", 2, gamma=2, alpha=[1.0, 3.0])(logits, target)
    assert loss.item() == pytest.approx((3 * terms[0] + 1 * terms[1]) / 4, rel=1e-6)
    loss = create_loss("focal", 2, gamma=0.5)(logits, target)
    assert loss.item() == pytest.approx((0.25**0.5 * -math.log(0.75) + 0.5**0.5 * -math.log(0.5)) / 2, rel=1e-6)


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.0, 3.0]])
def test_focal_with_gamma_0_is_cross_entropy(weights):
    logits, target = batch()
    ours, our_grad = grad_of(create_loss("focal", 5, class_weights=weights, gamma=0), logits, target)
    ref, ref_grad = grad_of(create_loss("ce", 5, class_weights=weights), logits, target)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(our_grad, ref_grad)


def test_smp_multiclass_focal_is_not_softmax_focal():
    """Why focal is written by hand: smp's multiclass focal is one-vs-rest sigmoid, so gamma=0 is not CE."""
    logits, target = batch(ignored=0.0)
    smp_value = SmpFocalLoss("multiclass", gamma=0.0, ignore_index=IGNORE)(logits, target)
    ce = F.cross_entropy(logits, target)
    assert not torch.isclose(smp_value, ce, rtol=0.05)
    torch.testing.assert_close(create_loss("focal", 5, gamma=0)(logits, target), ce)


def test_focal_small_gamma_has_finite_gradient_at_certain_pixels():
    logits = torch.tensor([[[[60.0]], [[-60.0]]]]).repeat(1, 1, 2, 2)  # p_true = 1 exactly in float32
    value, grad = grad_of(create_loss("focal", 2, gamma=0.5), logits, torch.zeros(1, 2, 2, dtype=torch.long))
    assert torch.isfinite(value) and torch.isfinite(grad).all()


# ------------------------------------------------------------------ Dice
def probs_as_logits(probs: list[list[float]]) -> torch.Tensor:
    """Pixels' class probabilities -> logits [1, C, 1, P] whose softmax gives them back."""
    return torch.tensor(probs).log().T.reshape(1, len(probs[0]), 1, len(probs))


def test_dice_known_values():
    logits = probs_as_logits([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    target = torch.tensor([[[0, 1, 1, IGNORE]]])
    dice0 = 2 * 0.9 / (0.9 + 0.2 + 0.6 + 1)  # ignored pixel left out of every sum
    dice1 = 2 * (0.8 + 0.4) / (0.1 + 0.8 + 0.4 + 2)
    assert create_loss("dice", 2)(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)
    smoothed = [(2 * 0.9 + 1) / (2.7 + 1), (2 * 1.2 + 1) / (3.3 + 1)]
    assert create_loss("dice", 2, smooth=1.0)(logits, target).item() == pytest.approx(1 - sum(smoothed) / 2, rel=1e-6)


def test_dice_averages_the_classes_present_in_the_target():
    logits = probs_as_logits([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    target = torch.tensor([[[0, 1]]])  # class 2 absent: not averaged, though predicted
    dice0 = 2 * 0.7 / (0.8 + 1)
    dice1 = 2 * 0.6 / (0.8 + 1)
    assert create_loss("dice", 3)(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)


def test_smp_dice_divides_by_all_classes():
    """Why dice is written by hand: smp's per-class Dice agrees, but it divides by C, not by the present classes."""
    logits, target = batch(c=6)
    target[target == 5] = 0
    target[target == 4] = 1
    smp_value = SmpDiceLoss("multiclass", ignore_index=IGNORE)(logits, target)
    torch.testing.assert_close(create_loss("dice", 6)(logits, target), smp_value * 6 / 4)


# ------------------------------------------------------------------ every loss: the contract
@pytest.mark.parametrize("spec", SPECS)
def test_ignored_pixels_get_exactly_zero_gradient(spec):
    logits, target = batch()
    _, grad = grad_of(make(spec), logits, target)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(grad)
    assert ignored.any() and (grad[ignored] == 0).all()
    assert (grad[~ignored] != 0).any()


@pytest.mark.parametrize("spec", SPECS)
def test_an_all_ignored_batch_gives_zero(spec):
    logits, _ = batch()
    value, grad = grad_of(make(spec), logits, torch.full((2, 12, 10), IGNORE))
    assert value.shape == () and value.item() == 0.0
    assert (grad == 0).all()


@pytest.mark.parametrize("spec", SPECS)
def test_bf16_autocast_computes_in_float32(spec):
    _, target = batch(ignored=0.1)
    conv = torch.nn.Conv2d(3, 5, 1)
    image = torch.randn(2, 3, 12, 10)
    loss = make(spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        value = loss(logits, target)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(conv.weight.grad).all()
    assert value.item() == loss(logits.detach().float(), target).item()  # same float32 math as outside autocast


def test_loss_math_runs_with_autocast_off():
    """A matmul in a loss's math would run in bf16 under autocast: SegLoss switches autocast off around compute."""

    class GramLoss(SegLoss):
        def compute(self, logits, target, valid):
            flat = logits.flatten(1)
            return (flat @ flat.T)[0, 0]

    logits, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (logits.flatten(1) @ logits.flatten(1).T).dtype == torch.bfloat16
        assert GramLoss(5)(logits, target).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", SPECS)
def test_cuda_fp16_autocast_matches_cpu(spec):
    logits, target = batch()
    loss = make(spec)
    expected = loss(logits.detach().half().float(), target)
    with torch.autocast("cuda", dtype=torch.float16):
        value = loss.to("cuda")(logits.detach().cuda().half(), target.cuda())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.cpu(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", ["ce", "focal", "lovasz"])
def test_large_logits_stay_finite(spec):
    logits, target = batch()
    value, grad = grad_of(create_loss(spec, 5), logits.detach() * 1e4, target)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("spec", ["0.5*focal+lovasz", "ohem+0.5*lovasz", " ce + 2e-1 * dice ", "dice+0.25*ce+focal"])
def test_a_sum_spec_is_the_weighted_sum_of_its_parts(spec):
    logits, target = batch()
    expected = sum(weight * make(name)(logits, target) for weight, name in parse_spec(spec))
    torch.testing.assert_close(make(spec)(logits, target), expected)


def test_options_reach_the_losses_that_take_them():
    logits, target = batch()
    combined = create_loss("ce+focal", 5, label_smoothing=0.2, gamma=0)
    smoothed = F.cross_entropy(logits, target, ignore_index=IGNORE, label_smoothing=0.2)
    torch.testing.assert_close(combined(logits, target), smoothed + F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_class_weights_go_to_ce_ohem_and_focal():
    logits, target = batch()
    weights = [1.0, 1.0, 1.0, 1.0, 10.0]
    for spec in ("ce", "ohem", "focal"):
        plain, weighted = create_loss(spec, 5)(logits, target), create_loss(spec, 5, class_weights=weights)(logits, target)
        assert not torch.isclose(plain, weighted)
    _, grad = grad_of(create_loss("ce", 5, class_weights=weights), logits, target)
    _, plain_grad = grad_of(create_loss("ce", 5), logits, target)
    share = lambda g: (g.abs().sum(1)[target == 4].sum() / g.abs().sum()).item()  # noqa: E731
    assert share(grad) > 2 * share(plain_grad)  # the up-weighted class pulls harder
    combined = create_loss("ce+dice", 5, class_weights=weights)
    torch.testing.assert_close(
        combined(logits, target), create_loss("ce", 5, class_weights=weights)(logits, target) + create_loss("dice", 5)(logits, target)
    )


def test_loss_moves_with_its_weights():
    loss = create_loss("ce+focal", 5, class_weights=[1.0] * 5).to("meta")
    assert loss.terms[0].class_weights.device.type == "meta" and loss.terms[1].class_weights.device.type == "meta"


# ------------------------------------------------------------------ spec and option errors
def test_spec_grammar():
    assert parse_spec("ce") == [(1.0, "ce")]
    assert parse_spec(" 0.5 * focal+ lovasz ") == [(0.5, "focal"), (1.0, "lovasz")]
    assert parse_spec("ohem+.5*lovasz") == [(1.0, "ohem"), (0.5, "lovasz")]
    assert parse_spec("1e+1*ce") == [(10.0, "ce")]
    assert type(create_loss("ce", 5)).__name__ == "CrossEntropyLoss"


@pytest.mark.parametrize("spec", ["", "ce+", "+ce", "ce++dice", "0.5ce", "ce dice", "0.5*", "ce*0.5", "-1*ce", "0*ce", "ce+ce", 3])
def test_malformed_specs(spec):
    with pytest.raises(SemsegError, match="loss spec"):
        create_loss(spec, 5)


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(SemsegError, match="unknown loss 'dcie'; known losses: ce, ohem, focal, dice, lovasz"):
        create_loss("ce+dcie", 5)


@pytest.mark.parametrize(
    "spec,options,message",
    [
        ("ce+dice", {"gama": 2}, "'gama' is taken by no loss"),
        ("dice", {"label_smoothing": 0.1}, "'label_smoothing' is taken by no loss"),
        ("focal", {"gamma": -1}, "'gamma'"),
        ("focal", {"alpha": [1.0, 2.0]}, "'alpha': expected 5"),
        ("focal", {"alpha": 0.25}, "'alpha'"),
        ("ohem", {"thresh": 1.5}, "'thresh'"),
        ("ohem", {"min_kept": 2.5}, "'min_kept'"),
        ("ce", {"label_smoothing": "a"}, "'label_smoothing'"),
        ("dice", {"smooth": -1}, "'smooth'"),
        ("ce", {"class_weights": [1.0] * 4}, "'class_weights': expected 5"),
        ("ce", {"class_weights": [1.0, -1.0, 1.0, 1.0, 1.0]}, "'class_weights'"),
        ("lovasz", {"class_weights": [1.0] * 5}, "no loss of 'lovasz' uses them"),
        ("focal", {"class_weights": [1.0] * 5, "alpha": [1.0] * 5}, "not both"),
        ("ce", {"ignore_index": 3}, "ignore_index"),
        ("ce", {"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_options(spec, options, message):
    kwargs = {"num_classes": 5, **options}
    with pytest.raises(SemsegError, match=message):
        create_loss(spec, **kwargs)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("spec", ["ce", "0.5*focal+lovasz"])
def test_bad_inputs(spec):
    loss = create_loss(spec, 5)
    logits, target = batch()
    with pytest.raises(SemsegError, match=r"target shape \[2, 12\] .* expected \[2, 12, 10\]"):
        loss(logits, target[:, :, 0])
    bad = target.clone()
    bad[0, 0, :3] = torch.tensor([7, -3, 7])
    with pytest.raises(SemsegError, match=r"values \[-3, 7\] that are neither a class id \(0..4\) nor the ignore index 255"):
        loss(logits, bad)
    with pytest.raises(SemsegError, match="6 channels but the loss was built for 5 classes"):
        loss(torch.randn(2, 6, 12, 10), target)
    with pytest.raises(SemsegError, match="integer target"):
        loss(logits, target.float())
    with pytest.raises(SemsegError, match=r"float logits \[N,C,H,W\]"):
        loss(logits[0], target)


def test_uint8_targets_are_accepted():
    logits, target = batch()
    torch.testing.assert_close(create_loss("ce", 5)(logits, target.to(torch.uint8)), create_loss("ce", 5)(logits, target))


# ------------------------------------------------------------------ class-weight helpers
def test_median_frequency_weights():
    class_pixels = [50, 10, 30, 0]
    present_pixels = [100, 100, 40, 0]  # class 3 never occurs
    freq = [0.5, 0.1, 0.75]
    expected = [0.5 / f for f in freq] + [0.0]  # median of (0.1, 0.5, 0.75) = 0.5
    torch.testing.assert_close(median_frequency_weights(class_pixels, present_pixels), torch.tensor(expected))
    torch.testing.assert_close(class_weights("median_freq", class_pixels, present_pixels), torch.tensor(expected))
    even = median_frequency_weights([10, 20], [100, 100])  # median of (0.1, 0.2) = 0.15
    torch.testing.assert_close(even, torch.tensor([1.5, 0.75]))


def test_sqrt_median_frequency_weights():
    class_pixels, present_pixels = [50, 10, 30, 0], [100, 100, 40, 0]
    expected = [math.sqrt(0.5 / f) for f in (0.5, 0.1, 0.75)] + [0.0]
    torch.testing.assert_close(sqrt_median_frequency_weights(class_pixels, present_pixels), torch.tensor(expected))
    torch.testing.assert_close(class_weights("sqrt_median_freq", class_pixels, present_pixels), torch.tensor(expected))
    assert set(CLASS_WEIGHT_METHODS) == {"median_freq", "sqrt_median_freq", "enet"}


def test_enet_weights():
    pixels = torch.tensor([70, 25, 5, 0])
    expected = [1 / math.log(1.02 + p) for p in (0.7, 0.25, 0.05, 0.0)]
    torch.testing.assert_close(enet_weights(pixels), torch.tensor(expected))
    torch.testing.assert_close(class_weights("enet", pixels.numpy()), torch.tensor(expected))
    assert enet_weights([1, 1], c=1.5).tolist() == pytest.approx([1 / math.log(2.0)] * 2)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: class_weights("inverse", [1, 2]), "unknown class weights 'inverse': expected median_freq, sqrt_median_freq, enet"),
        (lambda: class_weights("sqrt_median_freq", [1, 2]), "'sqrt_median_freq' need present_pixels"),
        (lambda: class_weights("median_freq", [1, 2]), "need present_pixels"),
        (lambda: median_frequency_weights([1, 2], [5, 5, 5]), "2 classes but present_pixels has 3"),
        (lambda: median_frequency_weights([6, 2], [5, 5]), "more pixels than the images"),
        (lambda: median_frequency_weights([0, 0], [0, 0]), "no class has any pixel"),
        (lambda: enet_weights([1, -2]), "counts >= 0"),
        (lambda: enet_weights([[1, 2]]), "'class_pixels'"),
        (lambda: enet_weights(["a", 2]), "'class_pixels'"),
        (lambda: enet_weights([1, 2], c=1.0), "must be > 1"),
    ],
)
def test_class_weight_errors(call, message):
    with pytest.raises(SemsegError, match=message):
        call()


def test_helper_weights_feed_create_loss():
    weights = class_weights("median_freq", [50, 10, 30, 0, 5], [100, 100, 40, 0, 50])
    logits, target = batch()
    torch.testing.assert_close(
        create_loss("ce", 5, class_weights=weights)(logits, target), F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE)
    )
