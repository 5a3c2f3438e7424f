"""Image and label-map reading, PNG writing, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semseg.errors import SemsegError
from semseg.io import atomic_write, encode_label_png, read_image, read_label_map, write_label_png


def test_palette_png_reads_as_indices_and_round_trips(tmp_path):
    labels = np.random.default_rng(0).integers(0, 21, size=(7, 9)).astype(np.uint8)
    palette = [[i * 10, 255 - i * 10, (i * 37) % 256] for i in range(21)]
    write_label_png(tmp_path / "p.png", labels, palette)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
        # its colours are the palette's, so a viewer shows the classes
        assert np.array_equal(np.asarray(img.convert("RGB"))[0, 0], palette[labels[0, 0]])
    assert np.array_equal(read_label_map(tmp_path / "p.png"), labels)


def test_sixteen_bit_labels_round_trip(tmp_path):
    labels = np.array([[0, 300], [65535, 7]], dtype=np.int64)
    (tmp_path / "l.png").write_bytes(encode_label_png(labels))
    assert np.array_equal(read_label_map(tmp_path / "l.png"), labels)


def test_colour_mask_is_refused_with_the_file_name(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = [128, 64, 128]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(SemsegError, match="rgb.png: label map has mode 'RGB' with differing colour channels"):
        read_label_map(tmp_path / "rgb.png")


def test_grey_mask_saved_as_rgb_reads_as_indices(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(read_label_map(tmp_path / "grey_rgb.png"), labels)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(SemsegError, match="junk.png: cannot read image"):
        read_image(tmp_path / "junk.png")
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SemsegError, match="cut.png: cannot read image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(SemsegError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_atomic_write_gives_the_mode_a_plain_open_gives(tmp_path):
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    with atomic_write(tmp_path / "atomic.txt", "w") as handle:
        handle.write("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_overlay_jpegs_keep_the_size_and_class_colours(tmp_path):
    from semseg.io import write_image_jpeg

    rgb = np.zeros((36, 48, 3), np.uint8)
    rgb[:, :16] = (128, 64, 128)  # blocks of flat colour, as an overlay's classes are
    rgb[:, 16:32] = (70, 70, 70)
    rgb[:, 32:] = (220, 20, 60)
    path = tmp_path / "overlays" / "x.jpg"
    path.parent.mkdir()
    path.write_bytes(b"the previous overlay")
    write_image_jpeg(path, rgb)
    with Image.open(path) as picture:
        assert picture.format == "JPEG" and picture.size == (48, 36)
        decoded = np.asarray(picture.convert("RGB")).astype(int)
    # quality 95 without chroma subsampling: colours within a few levels away from the blocks' edges
    for columns in (slice(2, 14), slice(18, 30), slice(34, 46)):
        assert np.abs(decoded[:, columns] - rgb[:, columns]).max() <= 4
    assert [p.name for p in path.parent.iterdir()] == ["x.jpg"]  # written in place of the old one, no leftovers
