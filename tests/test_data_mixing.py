"""ClassMix between the samples of a batch: what is pasted, from where, and how often."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semseg.data.mixing import class_mix

IGNORE = 255


def tagged_batch(masks: torch.Tensor) -> torch.Tensor:
    """Images whose every value names its sample and its pixel: sample * 10^6 + row * 10^3 + column."""
    n, h, w = masks.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pixel = (rows * 1000 + cols).double()
    return torch.stack([(i * 10**6 + pixel).expand(3, h, w) for i in range(n)])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.integers(2, 5), classes=st.integers(1, 6))
def test_a_mixed_sample_holds_half_of_one_partners_classes_wholly_and_in_place(seed, count, classes):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, classes, (count, 9, 11), generator=gen)
    masks[torch.rand(masks.shape, generator=gen) < 0.15] = IGNORE
    images = tagged_batch(masks)
    kept_images, kept_masks = images.clone(), masks.clone()
    out_images, out_masks = class_mix(images, masks, 1.0, IGNORE, generator=gen)
    assert torch.equal(images, kept_images) and torch.equal(masks, kept_masks)  # the inputs are left as they were
    pixel = images[0, 0]
    for i in range(count):
        source = torch.div(out_images[i, 0], 10**6, rounding_mode="floor").long()
        assert torch.equal(out_images[i, 0] - source * 10**6, pixel)  # every pixel stays where it was
        partners = set(source.unique().tolist()) - {i}
        assert len(partners) <= 1  # one partner, never the sample itself
        if not partners:
            assert torch.equal(out_masks[i], masks[i])
            continue
        j = partners.pop()
        pasted = source == j
        present = set(masks[j].unique().tolist()) - {IGNORE}
        chosen = set(masks[j][pasted].unique().tolist())
        assert IGNORE not in chosen and chosen <= present and len(chosen) == math.ceil(len(present) / 2)
        assert torch.equal(pasted, torch.isin(masks[j], torch.tensor(sorted(chosen))))  # each chosen class wholly
        assert torch.equal(out_masks[i], torch.where(pasted, masks[j], masks[i]))
        assert torch.equal(out_images[i], torch.where(pasted, images[j], images[i]))


def test_the_share_of_mixed_samples_follows_the_probability():
    gen = torch.Generator().manual_seed(0)
    masks = torch.stack([torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 4, dtype=torch.long)])
    images = tagged_batch(masks)
    mixed = sum(
        int(not torch.equal(out, masks[i]))
        for _ in range(2000)
        for i, out in enumerate(class_mix(images, masks, 0.3, IGNORE, generator=gen)[1])
    )
    assert abs(mixed / 4000 - 0.3) < 0.03


@pytest.mark.parametrize("count, probability", [(1, 1.0), (3, 0.0)])
def test_a_single_sample_or_probability_zero_leaves_the_batch_alone(count, probability):
    masks = torch.arange(count * 16).reshape(count, 4, 4) % 5
    images = tagged_batch(masks)
    out_images, out_masks = class_mix(images, masks, probability, IGNORE)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


def test_a_partner_without_labelled_pixels_pastes_nothing():
    masks = torch.stack([torch.full((4, 4), IGNORE), torch.full((4, 4), IGNORE)])
    images = tagged_batch(masks)
    out_images, out_masks = class_mix(images, masks, 1.0, IGNORE)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


def test_the_same_seed_mixes_the_same_way():
    masks = torch.randint(0, 4, (4, 8, 8), generator=torch.Generator().manual_seed(1))
    images = tagged_batch(masks)
    first = class_mix(images, masks, 0.5, IGNORE, generator=torch.Generator().manual_seed(7))
    second = class_mix(images, masks, 0.5, IGNORE, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
