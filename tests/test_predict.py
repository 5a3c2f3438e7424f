"""Prediction: the pure functions, the Predictor, and ``semseg predict`` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from semseg.errors import SemsegError
from semseg.meta import ModelMeta
from semseg import checkpoint as checkpoint_module
from semseg.models import factory
from semseg.runtime import precision as precision_module
from semseg.predict import tiling
from semseg.predict import (
    Predictor,
    default_batch_size,
    blend_weights,
    normalize,
    predict_whole,
    resize_back,
    slide_window,
    tile_grid,
    to_chw,
    tta,
)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def toy_meta(num_classes: int = 4) -> ModelMeta:
    return ModelMeta(num_classes, class_names=["a", "b", "c", "d"][:num_classes],
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]][:num_classes],
                     mean=MEAN, std=STD, input_size=(32, 32))


class ToySeg(nn.Module):
    """A tiny model honouring the SegModel contract: pads to its stride inside, logits at the input size."""

    size_divisor = 4

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, num_classes, 1)
        with torch.no_grad():  # spread the logits so that every class wins somewhere
            self.head.weight.mul_(4)
            self.head.bias.zero_()
        self.pretrained_cfg = toy_meta(num_classes)
        self.model_name = "toy"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.size_divisor, (-width) % self.size_divisor
        x = F.pad(x, (0, pad_w, 0, pad_h))
        y = self.head(torch.relu(self.bn(self.down(torch.relu(self.conv(x))))))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :height, :width]


class MirrorToy(nn.Module):
    """Mirror-symmetric 3x3 kernels and no stride: the model commutes with a horizontal flip."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def plain_recipe(model: nn.Module, image: Image.Image) -> np.ndarray:
    """The torchvision way, image by image: PIL, ToTensor, Normalize, model, argmax."""
    x = transforms.Normalize(MEAN, STD)(transforms.ToTensor()(image))
    with torch.no_grad():
        return model(x[None]).argmax(1)[0].numpy()


# ------------------------------------------------------------------ pure functions
def test_tile_grid_covers_the_image_with_equal_tiles():
    tiles = tile_grid((50, 70), (32, 32), (20, 20))
    assert {(y2 - y1, x2 - x1) for y1, y2, x1, x2 in tiles} == {(32, 32)}
    covered = np.zeros((50, 70), bool)
    for y1, y2, x1, x2 in tiles:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert tile_grid((20, 30), (64, 64), (32, 32)) == [(0, 20, 0, 30)]  # crop clipped to the image


def full_buffer_reference(model, image, crop, stride, weights):
    """Slide window the obvious way: one [C, H, W] accumulator."""
    height, width = image.shape[-2:]
    acc, norm = None, torch.zeros(height, width)
    for y1, y2, x1, x2 in tile_grid((height, width), crop, stride):
        probs = model(image[None, :, y1:y2, x1:x2]).softmax(1)[0]
        acc = torch.zeros(probs.shape[0], height, width) if acc is None else acc
        w = blend_weights((y2 - y1, x2 - x1), weights)
        acc[:, y1:y2, x1:x2] += probs * w
        norm[y1:y2, x1:x2] += w
    return acc / norm


@pytest.mark.parametrize("weights", ["uniform", "gaussian"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_slide_window_bands_equal_a_full_buffer(weights, batch_size):
    model = ToySeg().eval()
    image = normalize(torch.from_numpy(rgb(45, 61)).permute(2, 0, 1), MEAN, STD)
    with torch.no_grad():
        got = slide_window(model, image, (16, 24), (10, 13), 4, batch_size, weights)
        want = full_buffer_reference(model, image, (16, 24), (10, 13), weights)
    assert got.shape == (4, 45, 61)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_slide_equals_whole_when_one_crop_covers_the_image():
    model = ToySeg()
    image = rgb(37, 53)
    whole = Predictor(model, mode="whole", precision="fp32").predict(image, probs=True)
    slide = Predictor(model, mode="slide", crop=(64, 64), stride=(32, 32), precision="fp32").predict(image, probs=True)
    np.testing.assert_array_equal(slide.labels, whole.labels)
    np.testing.assert_allclose(slide.probs, whole.probs, rtol=1e-6, atol=1e-7)


def test_gaussian_weights_peak_in_the_middle_and_stay_positive():
    w = blend_weights((17, 33), "gaussian")
    assert w.shape == (17, 33) and w.min() > 0
    assert w[8, 16] == w.max() and w[0, 0] < w[8, 16] / 100


def test_resize_back_resizes_scores_not_ids():
    # two classes; class 1 wins right of a boundary at x = 2.7 (coarse grid of 4 columns)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    logits = torch.cat([torch.full_like(ramp, 2.7), ramp], 1)
    labels = resize_back(logits, (3, 16)).argmax(1)[0]
    nearest_ids = F.interpolate(logits.argmax(1, keepdim=True).float(), size=(3, 16), mode="nearest")[0, 0]
    # bilinear logits put the boundary near x = 2.7 * 4 + 1.5 = 12.3: columns 13.. are class 1
    assert labels[0].tolist() == [0] * 13 + [1] * 3
    assert not torch.equal(labels.float(), nearest_ids)


def test_predictor_with_size_resizes_logits_back_before_the_argmax():
    model = ToySeg()
    image = np.asarray(Image.fromarray(rgb(8, 12)).resize((59, 41), Image.BILINEAR))  # smooth regions
    got = Predictor(model, size=(20, 28), precision="fp32")(image)
    x = normalize(torch.from_numpy(image).permute(2, 0, 1)[None], MEAN, STD)
    with torch.no_grad():
        small = model(F.interpolate(x, size=(20, 28), mode="bilinear", antialias=True))
        want = F.interpolate(small, size=(41, 59), mode="bilinear").argmax(1)[0].numpy()
        ids_resized = F.interpolate(small.argmax(1, keepdim=True).float(), size=(41, 59), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(got, want)
    assert (got != ids_resized).any()


def test_tta_flip_on_a_flip_equivariant_model_changes_nothing():
    model = MirrorToy().eval()
    x = normalize(torch.from_numpy(rgb(24, 40)).permute(2, 0, 1)[None], MEAN, STD)
    with torch.no_grad():
        assert torch.allclose(model(x.flip(-1)), model(x).flip(-1), atol=1e-5)  # the premise
        probs = tta(lambda v: model(v).softmax(1), x, scales=(1.0,), flip=True)
        torch.testing.assert_close(probs, model(x).softmax(1), rtol=1e-5, atol=1e-6)


def test_tta_averages_scales_and_mirrored_views():
    model = ToySeg().eval()
    x = normalize(torch.from_numpy(rgb(24, 40)).permute(2, 0, 1)[None], MEAN, STD)
    p = lambda v: model(v).softmax(1)  # noqa: E731
    with torch.no_grad():
        got = tta(p, x, scales=(0.5, 1.0), flip=True)
        half = F.interpolate(x, size=(12, 20), mode="bilinear", antialias=True)
        views = [p(x), p(x.flip(-1)).flip(-1), p(half), p(half.flip(-1)).flip(-1)]
        want = sum(F.interpolate(v, size=(24, 40), mode="bilinear") for v in views) / 4
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_predict_whole_keeps_the_input_size():
    model = ToySeg().eval()
    x = torch.randn(2, 3, 31, 45)
    with torch.no_grad():
        assert predict_whole(model, x).shape == (2, 4, 31, 45)
        assert predict_whole(model, x, size=(16, 16)).shape == (2, 4, 31, 45)


# ------------------------------------------------------------------ the predictor
def test_fp32_reproduces_the_plain_recipe_exactly(tmp_path):
    model = ToySeg().eval()
    path = tmp_path / "frame.png"
    Image.fromarray(rgb(45, 67, seed=3)).save(path)
    want = plain_recipe(model, Image.open(path).convert("RGB"))
    predictor = Predictor(model, precision="fp32")
    np.testing.assert_array_equal(predictor(path), want)
    np.testing.assert_array_equal(predictor(Image.open(path)), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("settings", [{"mode": "whole"}, {"mode": "whole", "tta": True, "scales": (0.5, 1.0)},
                                      {"mode": "slide", "crop": (16, 16), "stride": (11, 9)}])
def test_a_cuda_predictor_gives_the_cpu_labels(settings):
    # normalization, TTA and tiling create constants of their own: each must land on the model's device
    model = ToySeg().eval()
    image = rgb(37, 53, seed=5)
    on_cpu = Predictor(model, device="cpu", precision="fp32", **settings).predict(image, probs=True)
    on_gpu = Predictor(model, device="cuda", precision="fp32", **settings).predict(image, probs=True)
    np.testing.assert_allclose(on_gpu.probs, on_cpu.probs, atol=1e-4)


@pytest.mark.parametrize(
    "settings",
    [
        {"mode": "whole"},
        {"mode": "whole", "size": (32, 48)},
        {"mode": "slide", "crop": (16, 16), "stride": (11, 9)},
        {"mode": "slide", "crop": (16, 16), "size": (40, 40)},
        {"mode": "whole", "tta": True},
        {"mode": "slide", "crop": (16, 16), "tta": True, "scales": (0.5, 1.0)},
    ],
)
def test_outputs_are_at_the_original_size(settings):
    predictor = Predictor(ToySeg(), **settings)
    result = predictor.predict(rgb(37, 53), confidence=True, probs=True)
    assert result.labels.shape == (37, 53) and result.labels.dtype == np.uint8
    assert result.confidence.shape == (37, 53)
    assert result.probs.shape == (4, 37, 53) and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result.confidence, result.probs.max(0), rtol=1e-6)
    assert result.labels.max() < 4


def test_batches_of_mixed_sizes_match_single_images():
    predictor = Predictor(ToySeg(), precision="fp32", batch_size=2)
    images = [rgb(20, 30, 0), rgb(20, 30, 1), rgb(20, 30, 2), rgb(25, 30, 3)]
    batched = predictor.predict_batch(images)
    for image, result in zip(images, batched):
        np.testing.assert_array_equal(result.labels, predictor(image))


def test_batch_size_defaults_to_one_image_on_the_cpu_and_can_be_set():
    assert Predictor(ToySeg(), device="cpu").batch_size == 1
    assert Predictor(ToySeg(), device="cpu", batch_size=3).batch_size == 3
    assert default_batch_size(torch.device("cuda")) == 4


def test_normalization_comes_from_the_model():
    model = ToySeg()
    model.pretrained_cfg.mean, model.pretrained_cfg.std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    predictor = Predictor(model, precision="fp32")
    image = rgb(16, 16)
    x = transforms.Normalize([0.5] * 3, [0.25] * 3)(transforms.ToTensor()(Image.fromarray(image)))
    np.testing.assert_allclose(predictor.predict_proba(image), model(x[None]).softmax(1)[0].detach().numpy(), rtol=1e-6)


def test_auto_precision_agrees_with_fp32():
    image = rgb(40, 56)
    fp32 = Predictor(ToySeg(), precision="fp32").predict_proba(image)
    auto = Predictor(ToySeg(), precision="auto").predict_proba(image)
    np.testing.assert_allclose(auto, fp32, atol=1e-5)  # auto resolves to fp32 on every CPU


def test_auto_precision_predicts_in_fp32_even_on_a_cpu_with_native_bf16(monkeypatch):
    # bf16 is not faster for every model on such a CPU, and a choice made by timing could change labels
    # between runs: prediction stays fp32 under auto there (training measures: tests/test_engine.py)
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    image = rgb(40, 56)
    predictor = Predictor(ToySeg(), precision="auto")
    assert predictor.precision == "fp32" and predictor.channels_last
    np.testing.assert_allclose(predictor.predict_proba(image), Predictor(ToySeg(), precision="fp32").predict_proba(image),
                               atol=1e-5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"mode": "slide", "crop": (16, 16), "stride": (20, 8)}, "larger than crop"),
        ({"mode": "slide", "crop": (0, 16)}, "crop must be two positive integers"),
        ({"mode": "slide", "crop": (16, -2)}, "crop must be two positive integers"),
        ({"mode": "tiles"}, "unknown mode"),
        ({"blend": "cosine"}, "unknown blend"),
        ({"size": (10,)}, "size must be two positive integers"),
        ({"tta": True, "scales": (0.0, 1.0)}, "scales must be positive"),
        ({"batch_size": 0}, "batch size"),
        ({"precision": "int4"}, "unknown precision"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings_raise_clear_errors(settings, message):
    with pytest.raises(SemsegError, match=message):
        Predictor(ToySeg(), **settings)


def test_slide_without_crop_uses_the_model_input_size():
    predictor = Predictor(ToySeg(), mode="slide")
    assert predictor.crop == (32, 32) and predictor.stride == (22, 22)


@pytest.mark.parametrize(
    "image, message",
    [
        ("/no/such/image.png", "file not found"),
        (np.zeros((8, 8), np.uint8), "uint8 \\[H, W, 3\\]"),
        (np.zeros((8, 8, 3), np.float32), "uint8 \\[H, W, 3\\]"),
        (42, "cannot predict on a int"),
    ],
)
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises(SemsegError, match=message):
        Predictor(ToySeg())(image)


def test_bands_released_in_small_pieces_equal_the_full_buffer(monkeypatch):
    monkeypatch.setattr(tiling, "BAND_ROWS", 5)
    model = ToySeg().eval()
    image = normalize(torch.from_numpy(rgb(70, 40)).permute(2, 0, 1), MEAN, STD)
    with torch.no_grad():
        bands = list(tiling.slide_window_bands(model, image, (32, 24), (13, 16), 4, 2, "gaussian"))
        want = full_buffer_reference(model, image, (32, 24), (13, 16), "gaussian")
    assert max(band.shape[1] for _, band in bands) == 5
    assert [top for top, _ in bands] == sorted(top for top, _ in bands)
    torch.testing.assert_close(torch.cat([band for _, band in bands], 1), want, rtol=1e-5, atol=1e-6)


def test_slide_window_checks_the_class_count():
    with pytest.raises(SemsegError, match="4 output channels but 7 classes"):
        slide_window(ToySeg().eval(), torch.randn(3, 20, 20), (16, 16), (8, 8), num_classes=7)


MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
import numpy as np, torch
from torch import nn
from semseg.predict import Predictor, write_outputs

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 19, 1))
image = np.random.default_rng(0).integers(0, 256, (6000, 8000, 3), dtype=np.uint8)
predictor = Predictor(model, mode="slide", crop=(512, 512), stride=(384, 384), batch_size=4)
result = predictor.predict(image, confidence=True)
write_outputs(Path(sys.argv[1]), "big", image, result, predictor.palette)
print(result.labels.shape, int(result.labels.max()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_a_48_megapixel_image_predicts_within_2_gib(tmp_path):
    """6000x8000, 19 classes, slide mode, full-size labels + confidence + overlay written: peak RSS < 2 GiB."""
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True)
    top, peak_kib = run.stdout.split()[-2], int(run.stdout.split()[-1])
    assert "(6000, 8000)" in run.stdout and int(top) < 19
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    with Image.open(tmp_path / "labels" / "big.png") as labels:
        assert labels.size == (8000, 6000) and labels.mode == "P"
    assert (tmp_path / "overlays" / "big.jpg").exists() and (tmp_path / "confidence" / "big.png").exists()


# ------------------------------------------------------------------ semseg predict
from semseg.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def toy_onnx_file(tmp_path_factory):
    from semseg.export import export_onnx

    return export_onnx(ToySeg(), tmp_path_factory.mktemp("model") / "toy.onnx", (32, 32), dynamic=True)


@pytest.fixture
def three_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rgb(37, 53, 1)).save(folder / "a.png")
    Image.fromarray(rgb(20, 31, 2)).save(folder / "b.jpg", quality=95)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_predict_cli_writes_every_readable_image_and_exits_1_for_the_corrupt_one(three_images, toy_onnx_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(three_images), "--onnx", str(toy_onnx_file), "--out", str(out), "--confidence", "--probs"])
    assert code == 1
    err = capsys.readouterr().err
    assert "c.png" in err and "cannot read image" in err
    expected = {"a": (37, 53), "b": (20, 31)}
    for stem, size in expected.items():
        with Image.open(out / "labels" / f"{stem}.png") as labels:
            assert labels.mode == "P" and labels.size == size[::-1]
            ids = np.asarray(labels)
        image = np.asarray(Image.open(next(three_images.glob(f"{stem}.*"))).convert("RGB"))
        want = Predictor(ToySeg(), precision="fp32")(image)
        assert (ids == want).mean() >= 0.999  # ONNX Runtime vs PyTorch: float rounding only
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == size[::-1]
        assert Image.open(out / "confidence" / f"{stem}.png").mode == "L"
        probs = np.load(out / "probs" / f"{stem}.npy")
        assert probs.shape == (4, *size) and probs.dtype == np.float32
        np.testing.assert_array_equal(probs.argmax(0), ids)
    assert not any(out.rglob("c.*")) and not any(out.rglob(".*.tmp"))


NO_TORCH_SCRIPT = """
import sys
from semseg.cli import main
code = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "no torch")
sys.exit(code)
"""


def test_an_exported_graph_predicts_without_importing_torch_and_gives_the_predictors_labels(three_images, toy_onnx_file,
                                                                                            tmp_path):
    (three_images / "c.png").unlink()
    args = ["predict", str(three_images), "--onnx", str(toy_onnx_file), "--workers", "2"]
    done = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, *args, "--out", str(tmp_path / "numpy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("no torch")
    assert "onnxruntime fp32, no TTA" in done.stdout
    # the same graph through the Predictor (a --blend other than the default sends it there; whole mode
    # does not use it): the same labels, bit for bit
    assert main([*args, "--blend", "gaussian", "--out", str(tmp_path / "torch")]) == 0
    for stem in ("a", "b"):
        numpy_labels = np.asarray(Image.open(tmp_path / "numpy" / "labels" / f"{stem}.png"))
        torch_labels = np.asarray(Image.open(tmp_path / "torch" / "labels" / f"{stem}.png"))
        np.testing.assert_array_equal(numpy_labels, torch_labels)
        assert (tmp_path / "numpy" / "overlays" / f"{stem}.jpg").is_file()


def test_decoding_ahead_keeps_the_order_and_names_bad_files(three_images):
    from semseg.predict.files import decode_ahead

    paths = sorted(three_images.iterdir())  # a.png, b.jpg, c.png (truncated)
    for workers in (0, 1, 2):
        results = list(decode_ahead(paths, workers))
        assert [index for index, _, _ in results] == [0, 1, 2]
        assert results[0][1].shape == (37, 53, 3) and results[1][1].shape == (20, 31, 3)
        assert results[2][1] is None and "c.png" in results[2][2]


def test_the_numpy_path_hands_what_it_does_not_do_to_the_predictor(toy_onnx_file):
    from semseg.predict.exported import GraphPredictor, runs_without_torch
    from semseg.runtime import OnnxModel

    session = OnnxModel(toy_onnx_file)
    built = []

    def full(limit=37 * 53):
        def build():
            built.append(Predictor(session, max_whole_pixels=limit))  # the limit both share, as in semseg predict
            return built[-1]

        return build

    assert runs_without_torch(session) and not runs_without_torch(session, tta=True)
    assert not runs_without_torch(session, size=(16, 16)) and not runs_without_torch(session, confidence=True)
    assert not runs_without_torch(ToySeg())  # a PyTorch model
    image = rgb(37, 53, 1)
    small = GraphPredictor(session, full(), max_whole_pixels=37 * 53)
    expected = Predictor(session).predict(image).labels
    np.testing.assert_array_equal(small.predict(image).labels, expected)
    assert not built  # whole image, labels only: no Predictor, no torch
    assert small.predict_batch([image], confidence=True)[0].confidence is not None and len(built) == 1
    large = GraphPredictor(session, full(100), max_whole_pixels=100)  # above the limit: slide mode, the Predictor's reason
    assert "slide mode" in large.needs_slide(image.shape)
    assert large.predict(image).labels.shape == (37, 53) and len(built) == 2


def test_normalization_in_numpy_is_the_predictors_to_the_bit():
    from semseg.predict.exported import GraphPredictor

    seen = {}

    class Recorder:
        backend = "onnxruntime"
        fixed_input_size = None
        pretrained_cfg = ModelMeta(num_classes=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

        def run(self, images):
            seen["x"] = images
            return np.zeros((len(images), 3, *images.shape[2:]), np.float32)

    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    GraphPredictor(Recorder(), lambda: None).predict(image)
    expected = normalize(to_chw(image)[None], Recorder.pretrained_cfg.mean, Recorder.pretrained_cfg.std).numpy()
    assert seen["x"].dtype == np.float32 and np.array_equal(seen["x"], expected)


@pytest.mark.parametrize(
    "flags",
    [["--mode", "slide", "--crop", "16", "16", "--stride", "12", "12", "--blend", "gaussian"],
     ["--size", "24", "24", "--tta", "--scales", "0.5", "1", "--batch-size", "2"]],
)
def test_predict_cli_modes_keep_the_original_size(three_images, toy_onnx_file, tmp_path, flags):
    out = tmp_path / "out"
    (three_images / "c.png").unlink()
    assert main(["predict", str(three_images / "*.png"), str(three_images / "b.jpg"), "--onnx", str(toy_onnx_file),
                 "--out", str(out), "--workers", "0", *flags]) == 0
    assert Image.open(out / "labels" / "a.png").size == (53, 37)
    assert Image.open(out / "labels" / "b.png").size == (31, 20)


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/file.png"], "no such file or folder"),
        (["IMAGES/*.tif"], "no image matches this pattern"),
        (["IMAGES", "--onnx", "ONNX", "--mode", "slide", "--crop", "0", "16"], "crop must be two positive integers"),
        (["IMAGES", "--onnx", "ONNX", "--mode", "slide", "--crop", "16", "16", "--stride", "17", "8"], "larger than crop"),
        (["IMAGES", "--weights", "w.pth"], "--weights and --num-classes go with --model"),
        (["IMAGES", "--onnx", "ONNX", "--checkpoint", "x.pt"], "does not combine"),
        (["IMAGES", "--onnx", "ONNX", "--precision", "bf16"], "PyTorch models only"),
        (["IMAGES", "--onnx", "missing.onnx"], "ONNX file not found"),
        (["IMAGES", "--checkpoint", "missing.pt"], "checkpoint file not found"),
    ],
)
def test_predict_cli_bad_inputs_give_clear_errors(three_images, toy_onnx_file, tmp_path, capsys, args, message):
    args = [a.replace("IMAGES", str(three_images)).replace("ONNX", str(toy_onnx_file)) for a in args]
    assert main(["predict", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_cli_refuses_two_images_with_one_output_name(tmp_path, toy_onnx_file, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rgb(8, 8)).save(tmp_path / folder / "same.png")
    assert main(["predict", str(tmp_path / "x"), str(tmp_path / "y"), "--onnx", str(toy_onnx_file), "--out", str(tmp_path / "o")]) == 2
    assert "would both write same.png" in capsys.readouterr().err


def test_without_a_model_the_default_model_is_used_once_shipped(three_images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_PATH", tmp_path / "default_model.pt")
    assert main(["predict", str(three_images), "--out", str(tmp_path / "out")]) == 2
    assert "no default model is shipped" in capsys.readouterr().err


# ------------------------------------------------------------------ with zoo models
@pytest.fixture(scope="module")
def lraspp_checkpoint(tmp_path_factory):
    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 5).eval()
    model.pretrained_cfg.class_names = ["sky", "road", "car", "tree", "person"]
    path = tmp_path_factory.mktemp("ckpt") / "lraspp.pt"
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, path)
    return path, model


def test_fp32_reproduces_the_plain_recipe_exactly_with_a_zoo_model(lraspp_checkpoint, tmp_path):
    _, model = lraspp_checkpoint
    path = tmp_path / "frame.png"
    demo = Path(factory.DEFAULT_MODEL_PATH).parent / "demo" / "val"
    Image.open(sorted(demo.glob("*.png"))[0]).resize((150, 110)).save(path)  # a street scene shipped in the package
    want = plain_recipe(model, Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(Predictor(model, precision="fp32")(path), want)
    auto = Predictor(model, precision="auto")(path)
    assert (auto == want).mean() >= 0.985


def test_predict_cli_with_a_checkpoint(lraspp_checkpoint, three_images, tmp_path, capsys):
    path, model = lraspp_checkpoint
    out = tmp_path / "out"
    assert main(["predict", str(three_images), "--checkpoint", str(path), "--out", str(out), "--precision", "fp32"]) == 1
    image = Image.open(three_images / "a.png").convert("RGB")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labels" / "a.png")), plain_recipe(model, image))
    assert "predicted 2 of 3 images" in capsys.readouterr().out
    with Image.open(out / "legend.png") as key:  # the overlays' key: a row per class of the model
        assert key.height >= 16 * model.pretrained_cfg.num_classes


def test_predict_cli_with_a_raw_state_dict(lraspp_checkpoint, three_images, tmp_path):
    _, model = lraspp_checkpoint
    weights = tmp_path / "weights.pth"
    torch.save(model.net.state_dict(), weights)  # the library's own keys, as torchvision publishes them
    (three_images / "c.png").unlink()
    out = tmp_path / "out"
    assert main(["predict", str(three_images), "--model", "lraspp_mobilenet_v3_large", "--weights", str(weights),
                 "--num-classes", "5", "--out", str(out), "--precision", "fp32"]) == 0
    image = Image.open(three_images / "b.jpg").convert("RGB")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labels" / "b.png")), plain_recipe(model, image))


def test_the_default_model_is_found_once_shipped(lraspp_checkpoint, three_images, tmp_path, monkeypatch):
    path, _ = lraspp_checkpoint
    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_PATH", path)
    (three_images / "c.png").unlink()
    assert main(["predict", str(three_images / "a.png"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "labels" / "a.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no_such_net", "--weights", "w.pth", "--num-classes", "3"], "unknown model 'no_such_net'"),
        (["--model", "lraspp_mobilenet_v3_large", "--num-classes", "3"], "needs --weights FILE"),
        (["--model", "lraspp_mobilenet_v3_large", "--weights", "w.pth", "--num-classes", "0"], "at least 1"),
        (["--checkpoint", "CKPT", "--model", "lraspp_mobilenet_v3_large"], "not both"),
    ],
)
def test_predict_cli_bad_model_options(lraspp_checkpoint, three_images, tmp_path, capsys, args, message):
    args = [a.replace("CKPT", str(lraspp_checkpoint[0])) for a in args]
    assert main(["predict", str(three_images), *args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_a_model_recommending_tta_is_predicted_with_it_unless_told_otherwise():
    model = ToySeg()
    model.pretrained_cfg.tta_scales = (1.0, 1.5)
    image = rgb(37, 53)
    recommended = Predictor(model, precision="fp32")
    assert recommended.tta and recommended.scales == (1.0, 1.5) and recommended.flip
    explicit = Predictor(model, precision="fp32", tta=True, scales=(1.0, 1.5))
    np.testing.assert_array_equal(recommended.predict_proba(image), explicit.predict_proba(image))
    assert not Predictor(model, tta=False).tta
    assert Predictor(model, tta=True, scales=(0.5,)).scales == (0.5,)
    assert not Predictor(ToySeg()).tta  # no recommendation: each image once
    assert Predictor(ToySeg(), tta=True).scales == (0.75, 1.0, 1.25)


def test_predict_cli_follows_and_overrides_the_recommended_tta(lraspp_checkpoint, tmp_path, capsys):
    from semseg.checkpoint import load_checkpoint, save_checkpoint

    path, _ = lraspp_checkpoint
    state = load_checkpoint(path)
    state["model_meta"]["tta_scales"] = [1.0, 1.25]
    save_checkpoint(state, tmp_path / "tta.pt")
    Image.fromarray(rgb(37, 53)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "tta.pt"), "--out", str(tmp_path / "a")]) == 0
    assert "TTA at scales 1, 1.25 + flip (the model's recommendation; --no-tta to turn it off)" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "tta.pt"), "--out", str(tmp_path / "b"),
                 "--no-tta"]) == 0
    assert "no TTA" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(path), "--out", str(tmp_path / "c")]) == 0
    assert "no TTA" in capsys.readouterr().out


def test_normalize_equals_torchvisions_recipe_bit_for_bit():
    # semseg writes the two operations of torchvision's Normalize itself (its import costs seconds): same bits
    image = rgb(37, 53, 5)
    expected = transforms.Normalize(MEAN, STD)(transforms.ToTensor()(Image.fromarray(image)))
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert torch.equal(normalize(chw, MEAN, STD), expected)
    assert torch.equal(normalize(torch.stack([chw, chw]), MEAN, STD), torch.stack([expected, expected]))


def test_a_prediction_process_does_not_import_torchvision():
    # start-up time of `semseg predict` on an exported graph: torchvision (and the model zoo) stay out of it
    import subprocess
    import sys

    code = ("import sys; from semseg.predict import Predictor, predict_files; "
            "from semseg.predict.backends import open_exported; from semseg.predict.loading import load_for_prediction; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm', 'segmentation_models_pytorch')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
