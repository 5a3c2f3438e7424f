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
