"""Joint transforms: masks are never interpolated, padding is ignore, image and mask move together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from semseg.config import DataConfig
from semseg.data import eval_transform, train_transform
from semseg.data.transforms import BLUR_SIGMA, CatMaxRatioCrop, RandomHue, RandomScale

IGNORE = 255


def sample(mask: np.ndarray, seed: int = 0) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    gen = torch.Generator().manual_seed(seed)
    h, w = mask.shape
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return tv_tensors.Image(image), tv_tensors.Mask(torch.as_tensor(mask, dtype=torch.int64))


def stripes(h: int = 20, w: int = 30, values: tuple[int, ...] = (3, 200, 7, 0)) -> np.ndarray:
    """Vertical stripes of far-apart values: any interpolation would invent values between them."""
    return np.array(values)[(np.arange(w) * len(values)) // w][None].repeat(h, axis=0)


# ---------------------------------------------------------------- what torchvision does with a Mask
@pytest.mark.parametrize("interpolation", [v2.InterpolationMode.BILINEAR, v2.InterpolationMode.BICUBIC])
def test_torchvision_resizes_masks_with_nearest_whatever_is_asked(interpolation):
    image, mask = sample(stripes())
    for size in ([7, 11], [53, 71]):
        out = F.resize(mask, size, interpolation=interpolation, antialias=True)
        assert isinstance(out, tv_tensors.Mask) and list(out.shape) == size
        assert set(out.unique().tolist()) <= {0, 3, 7, 200}
        expected = F.resize(mask[None].float(), size, interpolation=v2.InterpolationMode.NEAREST)[0].long()
        assert torch.equal(out, expected)
        # while the image is interpolated (new values appear)
        assert len(F.resize(image, size, interpolation=interpolation).unique()) > 4


def test_torchvision_pads_masks_with_the_mask_fill():
    image, mask = sample(stripes(4, 4))
    crop = v2.RandomCrop([9, 10], pad_if_needed=True, fill={tv_tensors.Mask: IGNORE, "others": 0})
    out_image, out_mask = crop(image, mask)
    padded = out_mask == IGNORE
    assert padded.sum() == 9 * 10 - 16
    assert (out_image[:, padded] == 0).all()
    assert torch.equal(out_mask[~padded].sort().values, mask.flatten().sort().values)


def test_colour_transforms_leave_the_mask_alone():
    image, mask = sample(stripes())
    out_image, out_mask = v2.ColorJitter(0.5, 0.5, 0.5, 0.1)(image, mask)
    assert torch.equal(out_mask, mask) and not torch.equal(out_image, image)


@pytest.mark.parametrize("factor", [-0.1, 0.03, 0.1])
def test_random_hue_through_pil_matches_torchvision_tensor_kernel(factor):
    image = sample(stripes(), seed=1)[0]
    channels_last = tv_tensors.Image(image.permute(1, 2, 0).contiguous().permute(2, 0, 1))
    expected = F.adjust_hue(image.as_subclass(torch.Tensor), factor).int()
    for inpt in (image, channels_last):
        out = RandomHue(0.1).transform(inpt, {"factor": factor})
        assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
        # both are HSV round trips; PIL rounds hue to 1/256 of the circle
        assert (out.int() - expected).abs().float().mean() < 2.0  # of 255 levels; 1.2 on this noise
    float_image = image.float() / 255
    assert torch.equal(RandomHue(0.1).transform(float_image, {"factor": factor}), F.adjust_hue(float_image, factor))


# ---------------------------------------------------------------- presets
def cfg_for(**kw) -> DataConfig:
    kw.setdefault("crop_size", [12, 16])
    return DataConfig(**kw)


@pytest.mark.parametrize("brightness", [0.125, 0.4])
def test_photometric_brightness_follows_the_config(brightness):
    preset = train_transform(cfg_for(brightness=brightness))
    jitters = [t for t in _walk(preset) if isinstance(t, v2.ColorJitter) and t.brightness is not None]
    assert [tuple(j.brightness) for j in jitters] == [pytest.approx((1 - brightness, 1 + brightness))]


def test_photometric_ranges_follow_the_config_and_zero_leaves_a_step_out():
    preset = train_transform(cfg_for(brightness=0.0, contrast=0.3, saturation=0.2, hue=0.05))
    steps = [t for t in _walk(preset) if isinstance(t, (v2.ColorJitter, RandomHue))]
    assert len(steps) == 3
    assert tuple(steps[0].contrast) == pytest.approx((0.7, 1.3)) and steps[0].brightness is None
    assert tuple(steps[1].saturation) == pytest.approx((0.8, 1.2))
    assert isinstance(steps[2], RandomHue) and steps[2].hue == 0.05


def test_photometric_with_every_range_zero_changes_no_pixel():
    off = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, scale_range=[1.0, 1.0], hflip=False)
    image, mask = sample(stripes(20, 30))
    torch.manual_seed(0)
    distorted = train_transform(cfg_for(crop_size=[20, 30], photometric=True, **off))(image, mask)
    undistorted = train_transform(cfg_for(crop_size=[20, 30], photometric=False, **off))(image, mask)
    assert torch.equal(distorted[0], undistorted[0]) and torch.equal(distorted[1], undistorted[1])


def test_blur_spreads_an_impulse_by_a_gaussian_in_the_sigma_range_and_leaves_the_mask_alone():
    """An impulse's blurred image is the kernel itself: its spread is the sigma drawn (independent of torchvision)."""
    impulse = torch.zeros(3, 21, 21, dtype=torch.uint8)
    impulse[:, 10, 10] = 255
    mask = tv_tensors.Mask(torch.as_tensor(stripes(21, 21)))
    off = dict(crop_size=[21, 21], scale_range=[1.0, 1.0], hflip=False, photometric=False, mean=[0, 0, 0], std=[1, 1, 1])
    torch.manual_seed(0)
    sigmas = []
    for _ in range(20):
        out_image, out_mask = train_transform(cfg_for(blur=1.0, **off))(tv_tensors.Image(impulse), mask)
        assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))
        weights = out_image[0].double()
        offsets = torch.arange(21, dtype=torch.float64) - 10
        assert abs(weights.sum().item() - 1) < 0.1  # uint8 rounding of the kernel's taps
        sigmas.append(float(((weights.sum(0) * offsets**2).sum() / weights.sum()).sqrt()))
    # the kernel is cut at +-4 pixels, and uint8 rounds small taps away: the spread reads a little low, and
    # sigma's low end (0.15) leaves an impulse, so only the top of the range is checked
    assert max(sigmas) <= BLUR_SIGMA[1] + 0.05
    assert max(sigmas) - min(sigmas) > 0.3  # sigma is drawn per sample
    unblurred, _ = train_transform(cfg_for(blur=0.0, **off))(tv_tensors.Image(impulse), mask)
    assert unblurred[0, 10, 10] == 1 and unblurred[0].sum() == 1


def _walk(transform):
    yield transform
    for child in getattr(transform, "transforms", []):
        yield from _walk(child)


def test_train_preset_output_types_and_padding():
    cfg = cfg_for(crop_size=[40, 50], scale_range=[1.0, 1.0], photometric=False, hflip=False)
    image, mask = train_transform(cfg)(*sample(stripes(20, 30)))
    assert type(image) is torch.Tensor and type(mask) is torch.Tensor  # plain tensors for the model
    assert (image.shape, image.dtype, mask.shape, mask.dtype) == ((3, 40, 50), torch.float32, (40, 50), torch.int64)
    padded = mask == IGNORE
    assert padded.sum() == 40 * 50 - 20 * 30
    # the image is padded with 0 before normalization: (0 - mean) / std after it
    expected = (-torch.tensor(cfg.mean) / torch.tensor(cfg.std))[:, None]
    assert torch.allclose(image[:, padded], expected.expand(3, int(padded.sum())))


def test_train_preset_moves_image_and_mask_together():
    """Without resizing, every crop/flip keeps each image pixel beside its own label."""
    mask = np.arange(20 * 30).reshape(20, 30) % 250
    image = tv_tensors.Image(torch.as_tensor(mask, dtype=torch.uint8)[None].repeat(3, 1, 1))
    cfg = cfg_for(crop_size=[16, 24], scale_range=[1.0, 1.0], photometric=False, mean=[0, 0, 0], std=[1, 1, 1])
    transform = train_transform(cfg)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(20):
        out_image, out_mask = transform(image, tv_tensors.Mask(torch.as_tensor(mask)))
        assert torch.equal((out_image[0] * 255).round().long(), out_mask)
        flipped += int(out_mask[0, 0] > out_mask[0, 1])
    assert 0 < flipped < 20  # hflip happened sometimes, not always


def test_random_scale_relative_to_image_or_base_size():
    image, mask = sample(stripes(20, 30))
    torch.manual_seed(0)
    sizes = {tuple(RandomScale([0.5, 2.0])(image, mask)[1].shape) for _ in range(30)}
    assert min(sizes) >= (10, 15) and max(sizes) <= (40, 60) and len(sizes) > 10
    h, w = RandomScale([1.0, 1.0], base_size=[100, 100])(image, mask)[1].shape
    assert (h, w) == (67, 100)  # the largest size with the image's aspect ratio inside 100x100


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    mask = np.zeros((40, 40), np.int64)
    mask[20:, 20:] = 1  # a smaller class in one corner
    mask[:5] = IGNORE  # ignored pixels do not count
    image, tv_mask = sample(mask)

    def share_below(ratio: float, crop_ratio: float) -> float:
        """Share of crops in which class 0 covers less than ``ratio`` of the labelled pixels."""
        crop = CatMaxRatioCrop([16, 16], crop_ratio, IGNORE)
        torch.manual_seed(0)
        outs = [crop(image, tv_mask)[1] for _ in range(200)]
        return float(np.mean([(m == 0).sum() < ratio * (m != IGNORE).sum() for m in outs]))

    plain, redrawn = share_below(0.75, crop_ratio=1.0), share_below(0.75, crop_ratio=0.75)
    assert plain < 0.5 and redrawn > 0.85  # about 0.35 and 1 - 0.65 ** 10 = 0.99


def test_eval_preset_resizes_to_base_size_or_keeps_the_size():
    image, mask = sample(stripes(20, 30))
    out_image, out_mask = eval_transform(cfg_for())(image, mask)
    assert out_image.shape == (3, 20, 30) and torch.equal(out_mask, mask.as_subclass(torch.Tensor))
    out_image, out_mask = eval_transform(cfg_for(base_size=[41, 59]))(image, mask)
    assert out_image.shape == (3, 41, 59) and out_mask.shape == (41, 59)
    assert set(out_mask.unique().tolist()) == {0, 3, 7, 200}


# ---------------------------------------------------------------- the property
@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    labels=st.lists(st.sampled_from([0, 1, 2, 5, 9, 17, 149, IGNORE]), min_size=1, max_size=5, unique=True),
    crop=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    low=st.floats(0.25, 2.0),
    spread=st.floats(0.0, 2.0),
    cat_max_ratio=st.sampled_from([1.0, 0.75, 0.3]),
    flags=st.tuples(st.booleans(), st.booleans()),
    base_size=st.none() | st.tuples(st.integers(4, 30), st.integers(4, 30)),
    seed=st.integers(0, 2**16),
)
def test_masks_after_any_transform_hold_only_values_from_before_or_ignore(
    height, width, labels, crop, low, spread, cat_max_ratio, flags, base_size, seed
):
    rng = np.random.default_rng(seed)
    mask = rng.choice(labels, size=(height, width))
    cfg = cfg_for(
        crop_size=list(crop), scale_range=[low, low + spread], cat_max_ratio=cat_max_ratio,
        hflip=flags[0], photometric=flags[1], base_size=list(base_size) if base_size else None,
    )
    before = set(mask.flatten().tolist()) | {IGNORE}
    torch.manual_seed(seed)
    for transform in (train_transform(cfg), eval_transform(cfg)):
        out_image, out_mask = transform(*sample(mask, seed))
        assert set(out_mask.unique().tolist()) <= before
        assert out_mask.dtype == torch.int64 and out_image.dtype == torch.float32
        assert out_image.shape[1:] == out_mask.shape
    assert tuple(train_transform(cfg)(*sample(mask, seed))[1].shape) == crop
