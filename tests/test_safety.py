"""Bad input and faults: the malformed-file corpus through every reader and command, under a memory limit.

Each command runs in a subprocess whose address space is capped with
``RLIMIT_AS``: a file that made semseg decode a bomb would fail the test with a
MemoryError (or a kill) instead of exhausting the machine.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from malformed import Case, write_corpus
from semseg.errors import SemsegError
from semseg.io import (
    atomic_write,
    folder_lock,
    image_size,
    max_image_pixels,
    read_image,
    read_label_map,
    remove_stale_temporaries,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[1]
# importing torch maps ~3.3 GB of address space; 6 GiB leaves under 3 GiB for the work itself
ADDRESS_LIMIT = 6 << 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Case]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


def run_cli(*args: str, limit: int = ADDRESS_LIMIT, env: dict[str, str] | None = None,
            peak: bool = False) -> subprocess.CompletedProcess:
    """``semseg ARGS`` in a subprocess with its address space capped at ``limit`` bytes; with ``peak``, its
    stdout ends with a line ``peak_kib N``, its peak resident memory."""
    report = "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" if peak else ""
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        from semseg.cli import main
        code = main(sys.argv[1:])
        {report}
        sys.exit(code)
    """)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment, timeout=600)


def assert_one_line_per_bad_file(stderr: str, folder: Path, cases: dict[str, Case]) -> None:
    assert "Traceback" not in stderr, stderr
    for name, case in cases.items():
        lines = [line for line in stderr.splitlines() if f"{folder / name}:" in line]
        if case.expect == "ok":
            assert not [line for line in lines if "WARNING" in line and "16-bit" not in line], lines
        else:
            assert len(lines) == 1 and case.expect in lines[0], (name, lines, stderr)


# ------------------------------------------------------------------ reading
def test_every_corpus_file_is_read_correctly_or_refused_naming_it(corpus):
    folder, cases = corpus
    for name, case in cases.items():
        if case.expect == "ok":
            image = read_image(folder / name)
            assert image.dtype == np.uint8 and image.shape == (*case.size, 3), name
        else:
            with pytest.raises(SemsegError, match=f"{folder / name}: .*{case.expect}"):
                read_image(folder / name)
            if case.expect != "32-bit floating-point":  # a float image is a mask of its own kind, refused too
                with pytest.raises(SemsegError, match=f"{folder / name}: "):
                    read_label_map(folder / name)


def test_pixels_match_independent_references(corpus):
    folder, _ = corpus
    # EXIF: PIL's own exif_transpose is the reference
    with Image.open(folder / "exif_rotated.jpg") as img:
        np.testing.assert_array_equal(read_image(folder / "exif_rotated.jpg"), np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
    with Image.open(folder / "cmyk.jpg") as img:
        np.testing.assert_array_equal(read_image(folder / "cmyk.jpg"), np.asarray(img.convert("RGB")))
    with Image.open(folder / "palette.png") as img:
        np.testing.assert_array_equal(read_image(folder / "palette.png"), np.asarray(img.convert("RGB")))
    # 16-bit: the high byte, never a clip to 255
    values = np.asarray(Image.open(folder / "sixteen.png")).astype(np.uint16)
    image = read_image(folder / "sixteen.png")
    np.testing.assert_array_equal(image[..., 0], (values >> 8).astype(np.uint8))
    assert (image == 255).sum() == 0


def test_full_range_sixteen_bit_images_keep_their_range(tmp_path):
    values = np.array([[0, 255, 256, 32768], [40000, 65280, 65535, 1000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "s.png")
    np.testing.assert_array_equal(read_image(tmp_path / "s.png")[..., 2], values >> 8)


def test_large_images_are_converted_in_bands_to_the_same_pixels(tmp_path, monkeypatch):
    import semseg.io

    pixels = np.random.default_rng(0).integers(0, 256, (103, 37, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    whole = read_image(tmp_path / "p.png")
    monkeypatch.setattr(semseg.io, "BAND_PIXELS", 37 * 10)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), whole)
    values = np.random.default_rng(1).integers(0, 65536, (51, 13), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "s.png")
    np.testing.assert_array_equal(read_image(tmp_path / "s.png")[..., 1], values >> 8)


def test_the_pixel_limit_is_checked_from_the_header_and_can_be_changed(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    assert max_image_pixels() == 1 << 28 and image_size(tmp_path / "a.png") == (30, 40)
    monkeypatch.setenv("SEMSEG_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(SemsegError, match=r"a.png: image of 40x30 \(1,200 pixels\) is larger than semseg's limit of 1,000"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("SEMSEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(SemsegError, match="SEMSEG_MAX_IMAGE_PIXELS must be a positive number of pixels, got 'lots'"):
        read_image(tmp_path / "a.png")


def test_folders_and_fifos_named_as_images_are_refused(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(SemsegError, match="dir.png: is a folder, not an image"):
        read_image(tmp_path / "dir.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(SemsegError, match="pipe.png: not a regular file"):
        read_image(tmp_path / "pipe.png")


# ------------------------------------------------------------------ writing
def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(SemsegError, match=r"scores.json: cannot write \(No space left on device\)"):
        with atomic_write(target, "w"):
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(SemsegError, match="is a folder; name a file to write"):
        write_text_atomic(tmp_path, "x")


FULL_DISK = """
import resource, signal, sys
from semseg.io import write_bytes_atomic
from semseg.errors import SemsegError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_bytes_atomic(sys.argv[1], b"x" * 100_000)
except SemsegError as exc:
    print(exc)
"""


def test_a_full_disk_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], capture_output=True, text=True, env=env, check=True)
    assert f"{target}: cannot write (File too large)" in run.stdout
    assert target.read_bytes() == b"previous" and sorted(tmp_path.iterdir()) == [target]


KILLED_WRITER = """
import signal, sys, time
# Ctrl-C as in a terminal: an ignored SIGINT survives exec (POSIX), so a child of a process that ignores it
# (a background job; the test process itself in some full-suite runs) would rightly ignore it too
signal.signal(signal.SIGINT, signal.default_int_handler)
from semseg.cli import terminate_as_interrupt
from semseg.io import atomic_write
with terminate_as_interrupt(), atomic_write(sys.argv[1]) as handle:  # as in every semseg command
    handle.write(b"half")
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_write_keeps_the_old_file_and_leftovers_are_cleaned(tmp_path, sig):
    target = tmp_path / "best.pt"
    target.write_bytes(b"good")
    live = _start_writer(tmp_path / "other.pt")
    proc = _start_writer(target)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"good"
    leftovers = sorted(p.name for p in tmp_path.glob(".best.pt.*.tmp"))
    if sig != signal.SIGKILL:  # an exception: the writer removed its own temporary
        assert leftovers == []
    else:  # SIGKILL runs no code: the next command removes what the dead process left, not a live one's
        assert leftovers == [f".best.pt.{proc.pid}.{leftovers[0].split('.')[-2]}.tmp"]
        removed = remove_stale_temporaries(tmp_path)
        assert [p.name for p in removed] == leftovers
    assert len(list(tmp_path.glob(".other.pt.*.tmp"))) == 1  # the live writer's is kept
    live.kill()
    live.wait()


HOLD_LOCK = """
import sys, time
from semseg.io import folder_lock
with folder_lock(sys.argv[1], "run folder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_folder_lock_refuses_a_second_command_and_dies_with_its_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(SemsegError, match=rf"run: the run folder is in use by another semseg command \(process {proc.pid}: "):
        with folder_lock(tmp_path / "run", "run folder"):
            pass
    proc.kill()  # SIGKILL: no cleanup code runs, the kernel drops the lock
    proc.wait()
    with folder_lock(tmp_path / "run", "run folder"):
        pass


def test_unwritable_folders_are_refused_before_any_work(tmp_path):
    from semseg.io import check_writable_file, check_writable_folder

    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        if os.access(tmp_path / "ro", os.W_OK):  # root: permissions are not enforced, the checks below still are
            raise PermissionError
        with pytest.raises(SemsegError, match=r"ro/out: cannot write the output folder here \(Permission denied\)"):
            check_writable_folder(tmp_path / "ro" / "out")
        with pytest.raises(SemsegError, match=r"ro: cannot write the folder of the output file here"):
            check_writable_file(tmp_path / "ro" / "model.onnx")
    except PermissionError:
        pass
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SemsegError, match="file: the output folder is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(SemsegError, match=r"file/out: cannot write the output folder here \(Not a directory\)"):
        check_writable_folder(tmp_path / "file" / "out")


# ------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory) -> Path:
    from semseg.export import export_onnx
    from test_predict import ToySeg

    return export_onnx(ToySeg(), tmp_path_factory.mktemp("model") / "toy.onnx", (32, 32), dynamic=True)


def test_predict_skips_each_bad_file_with_one_line_and_predicts_the_rest(corpus, toy_onnx, tmp_path):
    folder, cases = corpus
    out = tmp_path / "out"
    run = run_cli("predict", str(folder), "--onnx", str(toy_onnx), "--out", str(out), "--workers", "1")
    assert run.returncode == 1, run.stderr
    assert_one_line_per_bad_file(run.stderr, folder, cases)
    for name, case in cases.items():
        label = out / "labels" / f"{Path(name).stem}.png"
        if case.expect == "ok":
            with Image.open(label) as img:
                assert img.size == case.size[::-1], name
        else:
            assert not label.exists()
    assert not list(out.rglob("*.tmp"))
    bad = sum(case.expect != "ok" for case in cases.values())
    assert f"predicted {len(cases) - bad} of {len(cases)} images" in run.stdout


def test_a_large_image_goes_through_the_sliding_window_automatically(tmp_path):
    from semseg.predict import Predictor
    from test_predict import ToySeg, rgb

    image = rgb(70, 90, 3)
    auto = Predictor(ToySeg(), precision="fp32", max_whole_pixels=5000)
    reason = auto.needs_slide(image.shape)
    assert reason == "90x70 image is above the 0.0 MP that whole-image prediction handles: predicted in slide mode with 32x32 tiles"
    # the model's input size as tiles, a third of overlap
    slide = Predictor(ToySeg(), precision="fp32", mode="slide", crop=(32, 32), stride=(22, 22))
    np.testing.assert_array_equal(auto(image), slide(image))
    # TTA and size are dropped for such an image, and said so
    tta = Predictor(ToySeg(), precision="fp32", max_whole_pixels=5000, crop=(32, 32), stride=(24, 24), tta=True, size=(40, 40))
    assert tta.needs_slide(image.shape).endswith("with 32x32 tiles, without TTA and the size setting")
    np.testing.assert_array_equal(
        tta(image), Predictor(ToySeg(), precision="fp32", mode="slide", crop=(32, 32), stride=(24, 24))(image)
    )
    assert Predictor(ToySeg(), precision="fp32").needs_slide((2000, 4000, 3)) is None
    assert Predictor(ToySeg(), precision="fp32").needs_slide((3000, 3000, 3)) is not None


def _folder_dataset(root: Path, folder: Path, cases: dict[str, Case], split: str = "train") -> None:
    """Each corpus file as an image, with a good mask of its size (8x8 for the bad ones)."""
    for name, case in cases.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        os.link(folder / name, root / "images" / split / name)
        height, width = case.size or (8, 8)
        Image.fromarray((np.arange(height * width).reshape(height, width) % 2).astype(np.uint8)).save(
            root / "masks" / split / f"{Path(name).stem}.png"
        )


def test_data_check_names_every_bad_file_and_reports_the_rest(corpus, tmp_path):
    folder, cases = corpus
    root = tmp_path / "data"
    _folder_dataset(root, folder, cases)
    # bad masks too: a good image whose mask is a header bomb, one whose mask is empty
    for stem, data in (("bombmask", (folder / "bomb.png").read_bytes()), ("emptymask", b"")):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "train" / f"{stem}.png")
        (root / "masks" / "train" / f"{stem}.png").write_bytes(data)
    run = run_cli("data", "check", "--root", str(root), "num_classes=2")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    report = run.stdout
    for name, case in cases.items():
        if case.expect != "ok":
            assert f"{name}: " in report and case.expect in report, name
    assert "bombmask.png: image of 10,000,000,000 pixels is larger than semseg's limit" in report
    assert "emptymask.png: cannot read image" in report


def test_score_refuses_a_bad_label_file_naming_it(corpus, tmp_path, capsys):
    from semseg.cli import main

    folder, _ = corpus
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for d in (pred, gt):
        d.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    for name in ("bomb.png", "truncated.png", "zero_bytes.png"):
        (gt / name).write_bytes((folder / name).read_bytes())
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / name)
        if name == "bomb.png":
            run = run_cli("score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "2")
            code, err = run.returncode, run.stderr
        else:
            code, err = main(["score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "2"]), capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"{gt / name}: " in err, err
        (gt / name).unlink()
        (pred / name).unlink()


TRAIN = ["model.name=lraspp_mobilenet_v3_large", "data.format=folder", "data.num_classes=2", "data.crop_size=[32,32]",
         "data.workers=0", "train.batch_size=2", "train.epochs=1", "train.precision=fp32", "train.device=cpu"]


def test_train_skips_bad_training_samples_only_when_told_and_names_them(corpus, tmp_path):
    folder, cases = corpus
    root = tmp_path / "data"
    _folder_dataset(root, folder, cases, "train")
    _folder_dataset(root, folder, {"good.png": cases["good.png"]}, "val")
    # in a DataLoader worker: its error comes back as one line too, not with the worker's traceback
    run = run_cli("train", "--run-dir", str(tmp_path / "strict"), f"data.root={root}", *TRAIN, "data.workers=1")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    bad = [name for name, case in cases.items() if case.expect != "ok"]
    assert len(run.stderr.strip().splitlines()) == 1 and any(f"images/train/{name}: " in run.stderr for name in bad), run.stderr
    run = run_cli("train", "--run-dir", str(tmp_path / "skip"), f"data.root={root}", *TRAIN, "data.skip_bad_samples=true")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    for name, case in cases.items():
        if case.expect != "ok":
            assert f"images/train/{name}: " in run.stderr, name
    assert (tmp_path / "skip" / "last.pt").exists()
    bad = sum(case.expect != "ok" for case in cases.values())
    assert "epoch 1/1 | " in run.stdout and f"{bad} bad samples skipped" in run.stdout, run.stdout
    assert "UserWarning" not in run.stderr


def test_evaluation_never_skips_and_class_statistics_agree_with_training(tiny_camvid, tmp_path, capsys):
    import shutil

    from semseg.cli import main
    from semseg.config import DataConfig
    from semseg.data import build_dataset, class_statistics

    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    bad_mask = sorted((root / "trainannot").glob("*.png"))[1]
    bad_mask.write_bytes(b"")
    cfg = DataConfig(format="camvid", root=str(root), skip_bad_samples=True)
    train_set = build_dataset(cfg, "train", skip_bad_samples=True)
    stats = class_statistics(train_set)
    good = [build_dataset(cfg, "train").read_mask(i) for i in (0, 2, 3)]
    assert stats["skipped"] == 1 and stats["num_images"] == 3
    assert sum(stats["class_pixels"]) + stats["ignored_pixels"] == sum(m.size for m in good)
    # a run with median-frequency weights trains (the statistics skip what training skips)
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), f"data.root={root}", *FAST, "train.epochs=1", "data.skip_bad_samples=true",
                 "train.class_weights=median_freq"]) == 0
    err = capsys.readouterr().err
    assert f"class statistics: skipped {bad_mask}: cannot read image" in err
    # a bad val frame: `semseg val` fails naming it, even though the run skips bad training samples
    bad_val = sorted((root / "val").glob("*.png"))[0]
    bad_val.write_bytes(b"")
    assert main(["val", "--checkpoint", str(run / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad_val}: cannot read image" in err


# ------------------------------------------------------------------ export and weights
@pytest.fixture(scope="module")
def three_class_weights(tmp_path_factory) -> tuple[Path, Path]:
    """A training-like checkpoint and a raw state dict of a 3-class model."""
    import torch

    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3).eval()
    folder = tmp_path_factory.mktemp("weights")
    save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                     "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []}}, folder / "last.pt")
    torch.save(model.state_dict(), folder / "weights.pth")
    return folder / "last.pt", folder / "weights.pth"


def test_export_refuses_to_write_over_its_input(three_class_weights, tmp_path, capsys):
    from semseg.cli import main

    checkpoint, weights = three_class_weights
    before = checkpoint.read_bytes()
    os.symlink(checkpoint, tmp_path / "alias.pt")
    for out in (checkpoint, tmp_path / "alias.pt"):
        assert main(["export", "--checkpoint", str(checkpoint), "--format", "semseg", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"semseg: error: {out}: --out is the input file {checkpoint}; writing it would destroy the input: name another file\n"
    assert main(["export", "--model", "lraspp_mobilenet_v3_large", "--weights", str(weights), "--num-classes", "3",
                 "--out", str(weights)]) == 2
    assert "--out is the input file" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "folder.onnx")]) == 2
    assert "folder.onnx: the --out file is a folder; name a file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["export", "predict"])
def test_a_class_count_that_differs_from_the_weights_is_refused(three_class_weights, tmp_path, capsys, command):
    from semseg.cli import main

    _, weights = three_class_weights
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    source = [str(tmp_path / "a.png")] if command == "predict" else []
    out = tmp_path / ("out" if command == "predict" else "m.onnx")
    args = [command, *source, "--model", "lraspp_mobilenet_v3_large", "--weights", str(weights), "--num-classes", "5",
            "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{weights}: the weights are for 3 classes but the model is built for 5" in err
    assert "(--num-classes 3)" in err and not out.is_file() and not list(tmp_path.rglob("*.png"))[1:]


# ------------------------------------------------------------------ run folders
from conftest import FAST  # noqa: E402 - the tiny_camvid fixture lives in conftest.py


def test_a_folder_holding_a_previous_run_is_refused_unless_overwrite(tiny_camvid, tmp_path, capsys):
    from semseg.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"a model someone kept")
    (run / "metrics.jsonl").write_text("{}\n")
    args = ["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"semseg: error: {run} already holds a run (best.pt, metrics.jsonl); pick another --run-dir, "
                   "or replace it with --overwrite\n")
    assert (run / "best.pt").read_bytes() == b"a model someone kept" and not (run / "config.yaml").exists()
    assert main([*args, "--overwrite"]) == 0
    from semseg.checkpoint import load_checkpoint

    assert load_checkpoint(run / "best.pt")["epoch"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    # now it holds last.pt: the message offers --resume too
    assert main(args) == 2
    assert f"continue it with --resume {run}, pick another --run-dir" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--run-dir", str(run)]) == 2
    assert "--resume DIR continues the run in DIR: leave out --run-dir and --overwrite" in capsys.readouterr().err


def test_a_second_command_on_a_locked_run_folder_is_refused(tiny_camvid, tmp_path, capsys):
    from semseg.cli import main

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "run" / "last.pt").write_bytes(b"the run's checkpoint")
        for args in (["--run-dir", str(tmp_path / "run"), f"data.root={tiny_camvid}", *FAST], ["--resume", str(tmp_path / "run")]):
            assert main(["train", *args]) == 2
            err = capsys.readouterr().err
            assert f"{tmp_path / 'run'}: the run folder is in use by another semseg command (process {holder.pid}" in err
        assert not (tmp_path / "run" / "config.yaml").exists()
        assert (tmp_path / "run" / "last.pt").read_bytes() == b"the run's checkpoint"
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ one-line errors where tracebacks were
@pytest.mark.parametrize("content, message", [(b"", "empty file (0 bytes), not a checkpoint"),
                                              (b"hello\n", "not a readable PyTorch file"),
                                              (b"PK\x03\x04 not really a zip", "not a readable PyTorch file")])
def test_files_that_are_not_checkpoints_give_one_line(tmp_path, capsys, content, message):
    from semseg.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    for args in (["val", "--checkpoint", str(bad)], ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")],
                 ["predict", str(tmp_path / "a.png"), "--checkpoint", str(bad), "--out", str(tmp_path / "o")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{bad}: {message}" in err, err


@pytest.mark.parametrize("override, message", [
    ("train.lr=.nan", "config key 'train.lr' must be a finite number, got nan"),
    ("train.lr=inf", "config key 'train.lr' must be a finite number, got inf"),
    ("data.scale_range=[.nan,1]", "config key 'data.scale_range' must be a finite number, got [nan, 1]"),
    ("train.weight_decay=-.inf", "config key 'train.weight_decay' must be a finite number, got -inf"),
])
def test_non_finite_settings_are_refused_before_training(tiny_camvid, tmp_path, capsys, override, message):
    from semseg.cli import main

    assert main(["train", "--run-dir", str(tmp_path / "run"), f"data.root={tiny_camvid}", *FAST, override]) == 2
    err = capsys.readouterr().err
    assert err == f"semseg: error: {message}\n"
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.fixture(scope="module")
def finished_run(tiny_camvid, tmp_path_factory) -> Path:
    from semseg.cli import main

    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["-q", "train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=1"]) == 0
    return run


@pytest.mark.parametrize("override, changed", [
    ("train.optimizer=adamw", "train.optimizer ('sgd' -> 'adamw')"),
    ("model.name=fcn8s_resnet18", "model.name ('lraspp_mobilenet_v3_large' -> 'fcn8s_resnet18')"),
    ("train.ema=true", "train.ema (False -> True)"),
])
def test_resume_refuses_changes_to_the_saved_state_and_writes_nothing(finished_run, capsys, override, changed):
    from semseg.cli import main

    before = {name: (finished_run / name).read_bytes() for name in ("config.yaml", "last.pt", "metrics.jsonl")}
    assert main(["train", "--resume", str(finished_run), "train.epochs=2", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"a resumed run cannot change {changed}: it is part of the saved state" in err, err
    assert f"model.pretrained={finished_run / 'last.pt'}" in err
    assert {name: (finished_run / name).read_bytes() for name in before} == before


def test_outputs_are_checked_before_the_work(finished_run, tmp_path, capsys, corpus):
    from semseg.cli import main

    (tmp_path / "file").write_text("x")
    blocked = tmp_path / "file" / "scores.json"  # its folder is a file: cannot be created
    folder, _ = corpus
    checks = [
        (["score", "--pred", str(folder), "--gt", str(folder), "--num-classes", "2", "--json", str(blocked)], blocked.parent),
        (["data", "check", "--root", str(folder), "--json", str(blocked)], blocked.parent),
        (["val", "--checkpoint", str(finished_run / "last.pt"), "--json", str(blocked)], blocked.parent),
        (["predict", str(folder / "good.png"), "--checkpoint", str(finished_run / "last.pt"), "--out", str(tmp_path / "file")],
         tmp_path / "file"),
        (["predict", str(folder / "good.png"), "--checkpoint", str(finished_run / "last.pt"), "--out", str(tmp_path / "o"),
          "--workers", "-1"], None),
    ]
    for args, named in checks:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (named is None or f"{named}: " in err), err
    assert "workers must be 0 or more" in err and not (tmp_path / "o").exists()


def test_onnx_metadata_that_disagrees_with_the_graph_is_refused(toy_onnx, tmp_path):
    import json

    import onnx

    from semseg.runtime import OnnxModel

    graph = onnx.load(str(toy_onnx))
    for prop in graph.metadata_props:
        if prop.key == "num_classes":
            assert json.loads(prop.value) == 4
            prop.value = json.dumps(5)
    onnx.save(graph, str(tmp_path / "edited.onnx"))
    import torch

    with pytest.raises(SemsegError, match=r"edited.onnx: its metadata says 5 classes but the graph outputs 4 channels"):
        OnnxModel(tmp_path / "edited.onnx")(torch.zeros(1, 3, 32, 32))
    assert OnnxModel(toy_onnx)(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    # through the command: one line
    from semseg.cli import main

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--onnx", str(tmp_path / "edited.onnx"), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_the_issues_12000x12000_zero_image_predicts_within_the_documented_memory(tmp_path, monkeypatch):
    """The 140 KB PNG of 12000x12000 zeros that grew past 23 GB: slide mode chosen automatically, peak RSS < 3.5 GiB."""
    from malformed import ISSUE_ZEROS, zero_png
    from semseg.export import export_onnx
    from test_predict import ToySeg

    (tmp_path / "zeros.png").write_bytes(zero_png(*ISSUE_ZEROS))
    model = export_onnx(ToySeg(), tmp_path / "toy.onnx", (512, 512), dynamic=True)
    run = run_cli("predict", str(tmp_path / "zeros.png"), "--onnx", str(model), "--out", str(tmp_path / "out"),
                  "--workers", "0", "--confidence", limit=8 << 30, peak=True)
    assert run.returncode == 0, run.stderr
    assert "12000x12000 image is above the 8.4 MP that whole-image prediction handles: predicted in slide mode" in run.stderr
    peak_kib = int(run.stdout.split()[-1])
    assert peak_kib < 3.5 * (1 << 20), f"peak RSS {peak_kib / (1 << 20):.2f} GiB"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own bomb warning: this file is ours
    with Image.open(tmp_path / "out" / "labels" / "zeros.png") as labels:
        assert labels.size == ISSUE_ZEROS
