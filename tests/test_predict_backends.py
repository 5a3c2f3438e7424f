"""Prediction backends: torch and ONNX Runtime behind one Predictor, auto's lossless choice, the conversion cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semseg.cli import main
from semseg.errors import SemsegError
from semseg.predict import Predictor
from semseg.predict import backends, conversion
from semseg.runtime import OnnxModel
from semseg.runtime import cache
from test_export import PyramidToy
from test_predict import ToySeg, rgb


def entries() -> list[Path]:
    folder = cache.cache_dir() / "models"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnxruntime_backend_predicts_like_torch_fp32_and_caches_the_graph(fresh_cache):
    model = ToySeg()
    image = rgb(45, 70)
    want = Predictor(model, precision="fp32")(image)
    predictor = Predictor(ToySeg(), backend="onnxruntime")
    assert predictor.backend == "onnxruntime" and isinstance(predictor.model, OnnxModel)
    assert predictor.model.fixed_input_size is None  # a graph of any size
    assert (predictor(image) == want).mean() >= 0.999
    [record_path] = entries()
    record = json.loads(record_path.read_text())
    assert set(record["agreement"]) == {"onnxruntime", "openvino"}  # every installed runtime, measured once
    assert min(record["agreement"].values()) >= 0.999
    assert set(record["ms"]) == {"torch", "onnxruntime", "openvino"} and min(record["ms"].values()) > 0
    assert record_path.with_suffix(".onnx").is_file() and Path(predictor.model.path).parent == fresh_cache / "models"


def test_openvino_backend_predicts_like_torch_fp32_from_the_same_graph(fresh_cache):
    from semseg.runtime.openvino import OpenVinoModel

    image = rgb(45, 70)
    want = Predictor(ToySeg(), precision="fp32")(image)
    predictor = Predictor(ToySeg(), backend="openvino")
    assert predictor.backend == "openvino" and isinstance(predictor.model, OpenVinoModel)
    assert predictor.model.fixed_input_size is None and predictor.meta.class_names == ToySeg().pretrained_cfg.class_names
    assert (predictor(image) == want).mean() >= 0.999
    assert len(entries()) == 1  # one graph serves both runtimes
    assert Predictor(OpenVinoModel(predictor.model.path)).backend == "openvino"


def test_the_second_predictor_for_the_same_weights_converts_nothing(fresh_cache, monkeypatch):
    Predictor(ToySeg(), backend="onnxruntime")
    monkeypatch.setattr(conversion, "export_onnx", lambda *a, **k: pytest.fail("converted again"))
    assert Predictor(ToySeg(), backend="onnxruntime").backend == "onnxruntime"
    other = ToySeg()
    with torch.no_grad():
        other.head.bias.add_(0.5)  # other weights: another key, so another conversion
    with pytest.raises(pytest.fail.Exception, match="converted again"):
        Predictor(other, backend="onnxruntime")


@pytest.mark.parametrize(
    "agreement, ms, chosen",
    [
        ({"onnxruntime": 1.0, "openvino": 1.0}, {"torch": 10.0, "onnxruntime": 5.0, "openvino": 7.0}, "onnxruntime"),
        ({"onnxruntime": 1.0, "openvino": 1.0}, {"torch": 10.0, "onnxruntime": 5.0, "openvino": 3.0}, "openvino"),
        ({"onnxruntime": 1.0, "openvino": 1.0}, {"torch": 5.0, "onnxruntime": 10.0, "openvino": 7.0}, "torch"),
        ({"onnxruntime": 0.99, "openvino": 0.99}, {"torch": 10.0, "onnxruntime": 5.0, "openvino": 3.0}, "torch"),
        ({"onnxruntime": 1.0, "openvino": 0.99}, {"torch": 10.0, "onnxruntime": 5.0, "openvino": 3.0}, "onnxruntime"),
    ],
)
def test_auto_uses_a_runtime_only_where_it_is_lossless_and_fastest(fresh_cache, monkeypatch, agreement, ms, chosen):
    monkeypatch.setattr(conversion, "label_agreement", lambda model, session, inputs: agreement[session.backend])
    monkeypatch.setattr(conversion, "time_engines", lambda *a: ms)
    predictor = Predictor(ToySeg(), backend="auto")
    assert predictor.backend == chosen
    assert backends.auto_choice(json.loads(entries()[0].read_text())) == chosen
    monkeypatch.setattr(conversion, "time_engines", lambda *a: pytest.fail("measured again"))
    assert Predictor(ToySeg(), backend="auto").backend == chosen  # the measurements are cached with the graph


def test_a_runtime_installed_later_is_measured_then(fresh_cache, monkeypatch):
    monkeypatch.setattr(backends, "runtime_available", lambda runtime: runtime == "onnxruntime")
    Predictor(ToySeg(), backend="auto")
    assert set(json.loads(entries()[0].read_text())["ms"]) == {"torch", "onnxruntime"}
    monkeypatch.undo()
    monkeypatch.setenv("SEMSEG_CACHE_DIR", str(fresh_cache))
    monkeypatch.setattr(conversion, "export_onnx", lambda *a, **k: pytest.fail("converted again"))
    Predictor(ToySeg(), backend="auto")
    assert set(json.loads(entries()[0].read_text())["ms"]) == {"torch", "onnxruntime", "openvino"}


def test_an_explicit_onnxruntime_backend_runs_even_when_lossy_and_says_so(fresh_cache, monkeypatch, caplog):
    monkeypatch.setattr(conversion, "label_agreement", lambda *a: 0.95)
    with caplog.at_level(logging.WARNING):
        assert Predictor(ToySeg(), backend="onnxruntime").backend == "onnxruntime"
    assert "onnxruntime's labels equal PyTorch fp32's on 95.000% of pixels only" in caplog.text


def test_auto_is_torch_where_onnxruntime_cannot_be_lossless_or_is_missing(fresh_cache, monkeypatch):
    assert Predictor(ToySeg(), backend="auto", precision="fp32").backend == "torch"  # fp32: PyTorch's own numbers
    assert Predictor(PyramidToy(), backend="auto").backend == "torch"  # its graph would take one size only
    assert entries() == []  # nothing was converted
    with pytest.raises(SemsegError, match="backend onnxruntime runs graphs of any size, and this model has none"):
        Predictor(PyramidToy(), backend="onnxruntime")
    monkeypatch.setattr(backends, "runtime_available", lambda runtime: False)
    assert Predictor(ToySeg(), backend="auto").backend == "torch"
    with pytest.raises(SemsegError, match=r"backend onnxruntime needs it installed: pip install 'semseg\[onnx\]'"):
        Predictor(ToySeg(), backend="onnxruntime")
    with pytest.raises(SemsegError, match=r"pip install 'semseg\[openvino\]'"):
        Predictor(ToySeg(), backend="openvino")


def test_bad_backends_say_what_is_wrong(toy_session):
    with pytest.raises(SemsegError, match="unknown backend 'tensorrt'; use one of auto, torch, onnxruntime, openvino"):
        Predictor(ToySeg(), backend="tensorrt")
    with pytest.raises(SemsegError, match="backend torch needs a PyTorch model"):
        Predictor(toy_session, backend="torch")
    assert Predictor(toy_session, backend="auto").backend == "onnxruntime"
    assert Predictor(toy_session).backend == "onnxruntime" and Predictor(ToySeg()).backend == "torch"


@pytest.fixture
def toy_session(tmp_path):
    from semseg.export import export_onnx

    return OnnxModel(export_onnx(ToySeg(), tmp_path / "toy.onnx", (32, 32)))


def test_cache_keys_follow_the_weights():
    a, b = ToySeg(), ToySeg()
    assert cache.state_dict_digest(a) == cache.state_dict_digest(b)
    with torch.no_grad():
        b.conv.weight[0, 0, 0, 0] += 1e-6
    assert cache.state_dict_digest(a) != cache.state_dict_digest(b)
    assert conversion.model_key(a) != conversion.model_key(b)
    b.load_state_dict(a.state_dict())
    assert conversion.model_key(a) == conversion.model_key(b)


def test_file_keys_hash_the_bytes(tmp_path):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"x" * 3_000_000)
    second.write_bytes(b"x" * 2_999_999 + b"y")
    assert cache.file_digest(first) != cache.file_digest(second)
    assert backends.file_key(first) == backends.file_key(tmp_path / "a.pt")
    assert backends.file_key(first, "m", 3) != backends.file_key(first, "m", 4)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "semseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "semseg"


def test_incomplete_or_broken_entries_are_converted_again(fresh_cache, caplog):
    Predictor(ToySeg(), backend="onnxruntime")
    [record] = entries()
    record.with_suffix(".onnx").unlink()  # a graph gone: no entry
    assert cache.read_entry(record.stem) is None
    Predictor(ToySeg(), backend="onnxruntime")
    record.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert Predictor(ToySeg(), backend="onnxruntime").backend == "onnxruntime"
    assert "unreadable cache record" in caplog.text and "ms" in json.loads(record.read_text())
    with pytest.raises(SemsegError, match="cannot record a converted model that is not there"):
        cache.write_record("0" * 48, {})


CONVERT = """
import sys, torch
from torch import nn
from semseg.predict import Predictor
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
predictor = Predictor(model, backend="onnxruntime")
print(predictor.backend, predictor.model.path)
"""


def test_concurrent_runs_converting_the_same_weights_both_succeed(fresh_cache):
    env = {**os.environ, "SEMSEG_CACHE_DIR": str(fresh_cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    runs = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    paths = {out.split()[1] for out, _ in outputs}
    assert len(paths) == 1 and all(out.startswith("onnxruntime ") for out, _ in outputs)
    [record] = entries()
    assert json.loads(record.read_text())["agreement"]["onnxruntime"] >= 0.999
    assert OnnxModel(paths.pop()).fixed_input_size is None
    assert not [p for p in (fresh_cache / "models").iterdir() if p.name.endswith(".tmp")]  # no temporary files left


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    torch.manual_seed(0)
    model = create_model("fcn8s_resnet18", 3).eval()
    path = tmp_path_factory.mktemp("ckpt") / "fcn.pt"
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, path)
    return path


def test_predict_cli_backends_agree_and_a_cached_run_builds_no_torch_model(toy_checkpoint, tmp_path, fresh_cache,
                                                                          monkeypatch, capsys):
    from semseg.models import factory

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rgb(90, 120)).save(images / "a.png")
    args = ["predict", str(images), "--checkpoint", str(toy_checkpoint)]
    assert main([*args, "--out", str(tmp_path / "torch"), "--backend", "torch"]) == 0
    assert "(whole mode, torch fp32, no TTA)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "ort"), "--backend", "onnxruntime"]) == 0
    assert "(whole mode, onnxruntime fp32, no TTA)" in capsys.readouterr().out
    torch_labels = np.asarray(Image.open(tmp_path / "torch" / "labels" / "a.png"))
    ort_labels = np.asarray(Image.open(tmp_path / "ort" / "labels" / "a.png"))
    assert (torch_labels == ort_labels).mean() >= 0.999
    # the second run finds the conversion by the file's hash: the PyTorch model is never built
    monkeypatch.setattr(factory, "load_torch_model", lambda *a: pytest.fail("built the PyTorch model"))
    assert main([*args, "--out", str(tmp_path / "again"), "--backend", "onnxruntime"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again" / "labels" / "a.png")), ort_labels)
    # ... nor is torch imported at all (the cache lookup, the graph and the NumPy path need none)
    from test_predict import NO_TORCH_SCRIPT

    done = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, *args, "--out", str(tmp_path / "no-torch"),
                           "--backend", "onnxruntime"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SEMSEG_CACHE_DIR": str(fresh_cache)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("no torch")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "no-torch" / "labels" / "a.png")), ort_labels)


def test_predict_cli_backend_errors(toy_checkpoint, tmp_path, capsys, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rgb(20, 20)).save(images / "a.png")
    assert main(["predict", str(images), "--onnx", "x.onnx", "--backend", "torch", "--out", str(tmp_path / "o")]) == 2
    assert "--backend torch needs --checkpoint or --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own usage error
        main(["predict", str(images), "--backend", "tensorrt", "--out", str(tmp_path / "o")])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    monkeypatch.setattr(backends, "runtime_available", lambda runtime: False)
    assert main(["predict", str(images), "--checkpoint", str(toy_checkpoint), "--backend", "onnxruntime",
                 "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'semseg[onnx]'" in capsys.readouterr().err


def test_onnxruntime_threads_follow_omp_num_threads(toy_session, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert OnnxModel(toy_session.path).session.get_session_options().intra_op_num_threads == 1


# ------------------------------------------------------------------ images side by side (streams)
def test_a_concurrent_session_shares_the_threads_out(toy_session, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    shared = toy_session.concurrent(2)
    assert shared is not toy_session and shared.session.get_session_options().intra_op_num_threads == 2
    assert toy_session.concurrent(8).session.get_session_options().intra_op_num_threads == 1  # never below one
    assert toy_session.concurrent(1) is toy_session


def test_threads_calling_one_concurrent_session_get_each_their_own_logits(toy_session):
    from concurrent.futures import ThreadPoolExecutor

    session = toy_session.concurrent(3)
    inputs = [np.random.default_rng(seed).standard_normal((1, 3, 16 + 4 * seed, 20), dtype=np.float32) for seed in range(9)]
    alone = [toy_session.run(x) for x in inputs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(session.run, inputs))
    for want, got in zip(alone, together):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_images_predicted_side_by_side_equal_one_at_a_time_and_skip_the_bad_one(toy_session, tmp_path, caplog):
    from semseg.predict.exported import GraphPredictor
    from semseg.predict.files import predict_files

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(7):  # two sizes, so that batches of one size alternate
        Image.fromarray(rgb(24 + 8 * (index % 2), 40, index)).save(folder / f"{index}.png")
    (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # one unreadable file in the middle
    files = sorted(folder.iterdir())
    failed = {}
    for streams in (1, 3):
        predictor = GraphPredictor(toy_session, lambda: None, batch_size=2, streams=streams)
        assert predictor.streams == streams
        failed[streams] = predict_files(predictor, files, tmp_path / f"out{streams}", workers=2)
    assert failed[1] == failed[3] == [folder / "3.png"]
    for path in files:
        if path.name != "3.png":
            one = np.asarray(Image.open(tmp_path / "out1" / "labels" / path.name))
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out3" / "labels" / path.name)), one)
            assert Image.open(tmp_path / "out3" / "overlays" / f"{path.stem}.jpg").size == one.shape[::-1]
    assert not any((tmp_path / "out3").rglob("3.*")) and not any((tmp_path / "out3").rglob(".*.tmp"))


def test_a_failure_in_a_prediction_thread_stops_the_run_with_its_message(toy_session, tmp_path):
    from semseg.predict.exported import GraphPredictor
    from semseg.predict.files import predict_files

    class FailsOnTallImages:
        backend = "onnxruntime"
        fixed_input_size = None
        pretrained_cfg = toy_session.pretrained_cfg

        def run(self, images):
            if images.shape[2] > 30:
                raise SemsegError("the graph refused a 32-row image")
            return toy_session.run(images)

        def concurrent(self, streams):
            return FailsOnTallImages()

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(rgb(24 if index != 4 else 32, 40, index)).save(folder / f"{index}.png")
    predictor = GraphPredictor(FailsOnTallImages(), lambda: None, streams=2)
    assert predictor.streams == 2
    with pytest.raises(SemsegError, match="refused a 32-row image"):
        predict_files(predictor, sorted(folder.iterdir()), tmp_path / "out")
    assert not any((tmp_path / "out").rglob(".*.tmp")) and not any((tmp_path / "out").rglob("4.*"))


def test_a_session_that_gains_nothing_from_streams_predicts_one_image_at_a_time(toy_session):
    from semseg.predict.exported import GraphPredictor
    from semseg.runtime.openvino import OpenVinoModel

    openvino = OpenVinoModel(toy_session.path)
    assert openvino.concurrent(2) is openvino and GraphPredictor(openvino, lambda: None, streams=2).streams == 1

    class OnAGpu:
        backend, fixed_input_size, pretrained_cfg = "onnxruntime", None, toy_session.pretrained_cfg
        run = toy_session.run

        def concurrent(self, streams):
            return self

    assert GraphPredictor(OnAGpu(), lambda: None, streams=4).streams == 1
    with pytest.raises(SemsegError, match="streams must be 1 or more"):
        GraphPredictor(toy_session, lambda: None, streams=0)


def test_predict_cli_streams(toy_checkpoint, tmp_path, fresh_cache, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(rgb(24, 40, index)).save(folder / f"{index}.png")
    model = ["--checkpoint", str(toy_checkpoint), "--backend", "onnxruntime"]
    assert main(["predict", str(folder), *model, "--streams", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(["predict", str(folder), *model, "--streams", "3", "--out", str(tmp_path / "three")]) == 0
    for index in range(4):
        one = np.asarray(Image.open(tmp_path / "one" / "labels" / f"{index}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "three" / "labels" / f"{index}.png")), one)
    capsys.readouterr()
    assert main(["predict", str(folder), *model, "--streams", "0", "--out", str(tmp_path / "zero")]) == 2
    err = capsys.readouterr().err
    assert "--streams must be 1 or more" in err and "Traceback" not in err
