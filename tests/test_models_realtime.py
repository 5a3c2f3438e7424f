"""The real-time families (BiSeNetV2, DDRNet-23-slim, PIDNet-S, ERFNet) beyond the zoo's contract tests.

tests/test_models.py runs the contract on them (odd sizes, gradients to every
parameter, determinism, checkpoint round trip, frozen encoder); here: their
training heads, their padding, the published sizes, weights, ONNX, and a few
training steps through the trainer's own loss.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

from semseg.engine.loop import training_loss
from semseg.errors import SemsegError
from semseg.losses import create_loss
from semseg.models import create_model, list_models
from conftest import FAST as TRAIN_FAST
from test_export import _export_zoo_model
from test_models import NUM_CLASSES, fresh

# name -> (size_divisor, the keys of forward_aux in training, the encoder's module path)
FAMILIES = {
    "bisenetv2": (32, {"out", "aux", "aux2", "aux3", "aux4"}, "net.backbone"),
    "ddrnet_23_slim": (32, {"out", "aux"}, "net.backbone"),
    "pidnet_s": (32, {"out", "aux", "boundary"}, "net.backbone"),
    "erfnet": (8, {"out"}, "net.encoder"),
}
NAMES = list(FAMILIES)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on the shared 2-core machine two threads per process ran these tests 5-20x slower
    (the threads wait on each other while other jobs hold the cores), as benchmarks/bench_models.py notes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_families_are_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_training_heads_run_only_for_forward_aux(name):
    divisor, keys, encoder_path = FAMILIES[name]
    model = fresh(name).train()
    assert model.size_divisor == divisor and model.encoder_path == encoder_path
    assert model.has_aux == (keys != {"out"})
    x = torch.randn(2, 3, 45, 70)
    torch.manual_seed(1)
    outputs = model.forward_aux(x)
    assert set(outputs) == keys
    for key, value in outputs.items():
        assert value.shape == (2, 1 if key == "boundary" else NUM_CLASSES, 45, 70), key
    torch.manual_seed(1)  # same dropout masks: the main output does not depend on the training heads
    torch.testing.assert_close(model(x), outputs["out"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(64, 64), (360, 480), (33, 200)])
def test_any_input_size(name, size):
    model = fresh(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, NUM_CLASSES, *size)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_and_heads_split_the_parameters(name):
    model = fresh(name)
    encoder = {id(p) for p in model.encoder_parameters()}
    decoder = {id(p) for p in model.decoder_parameters()}
    assert encoder and decoder and not encoder & decoder
    heads = [m for key, m in model.net.named_children() if key != model.encoder_path.removeprefix("net.")]
    assert all(id(p) in decoder for head in heads for p in head.parameters())


@pytest.mark.parametrize("name, published", [("ddrnet_23_slim", 5.7), ("pidnet_s", 7.6), ("erfnet", 2.1)])
def test_parameter_counts_match_the_papers(name, published):
    # the papers count the inference network for Cityscapes' 19 classes, without the training-only heads
    model = create_model(name, 19)
    training_heads = [m for key, m in model.net.named_children() if key in ("aux_head", "boundary_head", "boosters")]
    count = sum(p.numel() for p in model.parameters()) - sum(p.numel() for m in training_heads for p in m.parameters())
    assert abs(count / 1e6 - published) / published < 0.02


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_true_fails_at_once_and_a_weights_file_loads(name, tmp_path):
    with pytest.raises(SemsegError, match=rf"model '{name}': no published weights.*pretrained='/path/to/weights.pth'"):
        create_model(name, NUM_CLASSES, pretrained=True)
    model = fresh(name).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    loaded = create_model(name, NUM_CLASSES, pretrained=tmp_path / "w.pth").eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_with_any_size_keeps_parity(name, tmp_path):
    # fixed-size graphs: tests/test_export.py::test_every_curated_model_exports_or_says_why (slow)
    _export_zoo_model(name, tmp_path, dynamic=True)


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images whose colour says the class: three vertical bands, one of them ignored in part."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, :, 21:42] = 1
    masks[:, :, 42:] = 2
    masks[1] = masks[1].flip(-1)
    masks[:, :4, :] = 255
    images = torch.randn(2, 3, 64, 64, generator=generator) * 0.3
    images += torch.eye(3)[masks.clamp(max=2)].permute(0, 3, 1, 2)
    return images, masks


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_reduce_the_trainers_loss(name):
    """AdamW on one tiny batch through the trainer's ``training_loss`` (aux heads and the boundary loss included)."""
    torch.manual_seed(0)
    model = fresh(name).train()
    criterion = create_loss("ce", NUM_CLASSES, ignore_index=255)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    images, masks = _toy_batch()
    losses = []
    for _ in range(6):
        outputs = model.forward_aux(images) if model.has_aux else {"out": model(images)}
        loss = training_loss(outputs, masks, criterion, 0.4, 255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


def test_bisenetv2_head_width_is_a_keyword_argument():
    model = create_model("bisenetv2", NUM_CLASSES, head_channels=64)
    assert model.model_kwargs == {"head_channels": 64}
    assert model.net.head.body[0][0].out_channels == 64
    assert isinstance(model.net.boosters, nn.ModuleList) and len(model.net.boosters) == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bisenetv2", "pidnet_s"])
def test_semseg_train_then_export_to_onnx(name, tiny_camvid, tmp_path):
    """The whole path: `semseg train` with every training head (PIDNet's boundary loss), then an ONNX export."""
    from semseg.cli import main

    run = tmp_path / "run"
    args = [a for a in TRAIN_FAST if not a.startswith(("model.name=", "train.epochs="))]
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", f"model.name={name}",
                 "train.epochs=1", "train.aux_weight=1.0", *args]) == 0
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--format", "onnx", "--dynamic",
                 "--out", str(tmp_path / "m.onnx"), "--size", "64", "96"]) == 0
