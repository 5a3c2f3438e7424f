"""Training engine: run folder, val agreement, exact resume after SIGKILL, DDP, schedules, safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semseg.checkpoint import load_checkpoint, save_checkpoint
from semseg.cli import main
from semseg.config import TrainConfig, load_config
from semseg.engine.optim import build_optimizer, lr_factor
from semseg.engine.trainer import RunClock
from semseg.errors import SemsegError
from semseg.runtime import precision as precision_module

from conftest import FAST  # the tiny_camvid fixture lives in conftest.py


def _train(run_dir: Path, root: Path, *extra: str) -> int:
    return main(["train", "--run-dir", str(run_dir), f"data.root={root}", *FAST, *extra])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_the_run_folder_and_val_agrees(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, tiny_camvid) == 0
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl"):
        assert (run / name).is_file(), name
    lines = _metrics(run)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    for key in ("epoch", "lr", "train_loss", "miou", "mean_acc", "mdice", "pixel_acc", "fwiou"):
        assert key in lines[-1]
    # a plain torch.load with weights_only=True reads every checkpoint
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["config"]["train"]["epochs"] == 3
    assert state["model_meta"]["class_names"][0] == "Sky"

    # `semseg val` on best.pt gives exactly the number training logged for that epoch
    best = torch.load(run / "best.pt", weights_only=True)
    logged = next(line for line in lines if line["epoch"] == best["epoch"])
    assert main(["val", "--checkpoint", str(run / "best.pt"), "--json", str(tmp_path / "val.json")]) == 0
    scores = json.loads((tmp_path / "val.json").read_text())
    assert scores["miou"] == logged["miou"]
    assert scores["pixel_acc"] == logged["pixel_acc"]
    assert "per_class" in scores and "confusion_matrix" in scores
    assert 0 <= scores["mboundary_iou"] <= 1 and "boundary_iou" in scores["per_class"]["Sky"]  # the val report adds boundary IoU
    assert "Sky" in capsys.readouterr().out  # the per-class table was printed


def test_existing_run_is_not_overwritten(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"precious")
    assert _train(run, tiny_camvid) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == b"precious"


def _spawn_train(run_dir: Path, root: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "semseg", "train", "--run-dir", str(run_dir), f"data.root={root}", *FAST,
            "train.epochs=4", "train.ema=true", "train.ema_decay=0.9", *extra]
    # one thread each: two OpenMP pools spinning on two cores slow tiny ops down ~50x
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def test_resume_after_sigkill_is_exact(tiny_camvid, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _spawn_train(whole, tiny_camvid)
    victim = _spawn_train(killed, tiny_camvid)
    # kill the second run mid-way through its second epoch (after its first last.pt landed)
    deadline = time.monotonic() + 600  # generous: a loaded CI machine starts Python slowly
    while not (killed / "last.pt").exists():
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert reference.wait() == 0, reference.stderr.read().decode()
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] < 4

    # resume with the same thread count as the reference: float sums depend on it
    resumed = subprocess.run([sys.executable, "-m", "semseg", "train", "--resume", str(killed)],
                             capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(whole / "last.pt")
    b = load_checkpoint(killed / "last.pt")
    for key in ("model", "train_model"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    strip = lambda lines: [{k: v for k, v in line.items() if k not in ("elapsed_s", "images_per_s", "train_time_s", "eval_time_s")} for line in lines]
    assert strip(_metrics(whole)) == strip(_metrics(killed))


def _loss_turns_nan_after(monkeypatch, good_batches: int) -> None:
    """The trainer's loss, NaN from batch ``good_batches`` + 1 of the run on."""
    from semseg.engine import setup

    real = setup.create_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)

        class Poisoned(torch.nn.Module):
            def forward(self, logits, target):
                calls["n"] += 1
                value = loss(logits, target)
                return value * float("nan") if calls["n"] > good_batches else value

        return Poisoned()

    monkeypatch.setattr(setup, "create_loss", poisoned)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_camvid, tmp_path, monkeypatch, capsys):
    _loss_turns_nan_after(monkeypatch, 2)  # two batches an epoch: epoch 2 goes bad
    run = tmp_path / "run"
    assert _train(run, tiny_camvid) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 2" in err and "last.pt (epoch 1)" in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_checkpoint_every_writes_last_pt_at_its_period_at_validations_and_at_the_end(tiny_camvid, tmp_path,
                                                                                     monkeypatch, capsys):
    from semseg.engine import loop

    saved: list[tuple[str, int]] = []
    real_save = loop.save_checkpoint

    def recording_save(state, path):
        saved.append((Path(path).name, state["epoch"]))
        real_save(state, path)

    monkeypatch.setattr(loop, "save_checkpoint", recording_save)
    run = tmp_path / "run"
    # 5 epochs of 2 batches: a period of 3 (epoch 3), validations at 4 and at the end (5)
    assert _train(run, tiny_camvid, "train.epochs=5", "train.val_every=4", "train.checkpoint_every=3",
                  "train.batch_size=2") == 0
    assert [epoch for name, epoch in saved if name == "last.pt"] == [3, 4, 5]
    best = [epoch for name, epoch in saved if name == "best.pt"]
    assert best[0] == 4 and set(best) <= {4, 5}  # the first validation, then the last if it scored higher
    assert [line["epoch"] for line in _metrics(run)] == [1, 2, 3, 4, 5]  # the log still has every epoch

    # a run that fails between two writes names the epoch last.pt holds
    _loss_turns_nan_after(monkeypatch, 10)  # two batches an epoch: epoch 6 goes bad
    saved.clear()
    failed = tmp_path / "failed"
    assert _train(failed, tiny_camvid, "train.epochs=8", "train.val_every=100", "train.checkpoint_every=4",
                  "train.batch_size=2") == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 6" in err and "last.pt (epoch 4)" in err
    assert [epoch for name, epoch in saved if name == "last.pt"] == [4]
    assert torch.load(failed / "last.pt", weights_only=True)["epoch"] == 4


class Payload:
    """Stands for any pickled object a malicious checkpoint could carry."""


def test_pickled_checkpoint_is_refused(tmp_path, capsys):
    torch.save({"format": "semseg-checkpoint", "model_name": "x", "model": {}, "evil": Payload()}, tmp_path / "bad.pt")
    with pytest.raises(SemsegError, match="refused to load"):
        load_checkpoint(tmp_path / "bad.pt")
    assert main(["val", "--checkpoint", str(tmp_path / "bad.pt")]) == 2
    assert "refused to load" in capsys.readouterr().err


def test_wrong_dataset_for_the_model_is_caught_up_front(tiny_camvid, tmp_path, capsys):
    assert _train(tmp_path / "run", tiny_camvid, "data.num_classes=5") == 2
    assert "'data.num_classes' is 5 but the camvid dataset has 11" in capsys.readouterr().err


def test_class_weights_from_the_training_set(tiny_camvid, tmp_path):
    run = tmp_path / "run"
    assert _train(run, tiny_camvid, "train.epochs=1", "train.class_weights=median_freq", "train.loss=ce+0.5*dice") == 0
    weights = torch.load(run / "last.pt", weights_only=True)["class_weights"]
    assert len(weights) == 11 and all(np.isfinite(weights))
    assert max(weights) > 1 > min(w for w in weights if w > 0)  # rare classes up, frequent ones down


def test_time_precisions_warms_up_then_keeps_each_precisions_fastest_round(monkeypatch):
    calls, clock = [], iter([0.0, 3.0, 10.0, 11.0, 20.0, 21.5, 30.0, 30.5])  # fp32 3 s then 1.5 s; bf16 1 s then 0.5 s
    monkeypatch.setattr(precision_module.time, "perf_counter", lambda: next(clock))
    seconds = precision_module.time_precisions(calls.append, ("fp32", "bf16"), rounds=2)
    assert calls == ["fp32", "bf16"] * 3  # one warm-up each, then the rounds in turns
    assert seconds == {"fp32": 1.5, "bf16": 0.5}
    # bf16 only by a clear margin: a near tie keeps fp32's numbers (and the same labels on every run)
    assert precision_module.faster_precision(seconds) == "bf16"
    assert precision_module.faster_precision({"fp32": 1.0, "bf16": 0.95}) == "fp32"
    assert precision_module.faster_precision({"fp32": 1.0, "bf16": 1.2}) == "fp32"


def _as_on_a_bf16_cpu(monkeypatch, seconds: dict[str, float]) -> None:
    """train.precision=auto as on a CPU with native bf16: the measurement's steps run for real (on the
    model's copy), its timings replaced by ``seconds``."""
    from semseg.engine import setup

    real = precision_module.time_precisions
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(setup, "time_precisions", lambda run: {**real(run, rounds=1), **seconds})


def test_auto_precision_on_a_bf16_cpu_measures_trains_in_the_faster_and_resumes_in_it(tiny_camvid, tmp_path,
                                                                                      monkeypatch, caplog):
    plain, auto = tmp_path / "fp32", tmp_path / "auto"
    assert _train(plain, tiny_camvid, "train.epochs=2") == 0
    with caplog.at_level("INFO", logger="semseg.engine.setup"):
        _as_on_a_bf16_cpu(monkeypatch, {"fp32": 1.0, "bf16": 2.0})
        assert _train(auto, tiny_camvid, "train.epochs=2", "train.precision=auto") == 0
    assert "precision auto: fp32, the faster on this CPU" in caplog.text and "2.00 s in bf16" in caplog.text
    # measuring ran forward and backward on a copy, with the random state restored: the run is the plain fp32 run
    a, b = load_checkpoint(plain / "last.pt"), load_checkpoint(auto / "last.pt")
    assert b["precision"] == "fp32" and a["precision"] == "fp32"
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [e["train_loss"] for e in _metrics(plain)] == [e["train_loss"] for e in _metrics(auto)]
    # `semseg val` evaluates in the precision the run chose: the number its training logged
    with caplog.at_level("INFO", logger="semseg.engine.evaluate"):
        assert main(["val", "--checkpoint", str(auto / "last.pt"), "--json", str(tmp_path / "val.json")]) == 0
    assert "evaluating in fp32: the precision last.pt chose" in caplog.text
    assert json.loads((tmp_path / "val.json").read_text())["miou"] == _metrics(auto)[-1]["miou"]

    # a resumed run computes as it began, whatever a new measurement would say
    caplog.clear()
    with caplog.at_level("INFO", logger="semseg.engine.setup"):
        _as_on_a_bf16_cpu(monkeypatch, {"fp32": 2.0, "bf16": 1.0})
        assert main(["train", "--resume", str(auto), "train.epochs=3"]) == 0
    assert "precision auto" not in caplog.text
    assert load_checkpoint(auto / "last.pt")["precision"] == "fp32"

    # where bf16 wins, the run trains in it, and `semseg val` of its checkpoint evaluates in it too
    faster_bf16 = tmp_path / "bf16"
    _as_on_a_bf16_cpu(monkeypatch, {"fp32": 2.0, "bf16": 1.0})
    assert _train(faster_bf16, tiny_camvid, "train.epochs=2", "train.precision=auto") == 0
    assert load_checkpoint(faster_bf16 / "last.pt")["precision"] == "bf16"
    caplog.clear()
    with caplog.at_level("INFO", logger="semseg.engine.evaluate"):
        assert main(["val", "--checkpoint", str(faster_bf16 / "last.pt"), "--json", str(tmp_path / "val16.json")]) == 0
    assert "evaluating in bf16: the precision last.pt chose" in caplog.text
    assert json.loads((tmp_path / "val16.json").read_text())["miou"] == _metrics(faster_bf16)[-1]["miou"]


@pytest.mark.slow  # inductor compiles LR-ASPP's forward and backward: minutes on two cores
def test_compile_trains_the_same_model_and_checkpoints_its_eager_weights(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, tiny_camvid, "train.epochs=1", "train.compile=true") == 0
    assert "device   cpu, fp32, channels_last, torch.compile" in capsys.readouterr().out  # the start banner says so
    state = torch.load(run / "last.pt", weights_only=True)
    eager = load_config(None, FAST)
    from semseg.engine.setup import build_model

    expected = build_model(eager, 11, [f"c{i}" for i in range(11)], [[0, 0, 0]] * 11).state_dict()
    assert list(state["model"]) == list(expected)  # no compiled wrapper's prefixes: the checkpoint loads anywhere
    assert np.isfinite(_metrics(run)[-1]["train_loss"])
    assert main(["val", "--checkpoint", str(run / "last.pt")]) == 0


def test_compile_without_a_cpp_compiler_is_one_clear_error(tiny_camvid, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    assert _train(tmp_path / "run", tiny_camvid, "train.epochs=1", "train.compile=true") == 2
    err = capsys.readouterr().err
    assert "'train.compile'" in err and "'/nonexistent/g++' was not found" in err and "Traceback" not in err


def test_bn_momentum_applies_to_every_batchnorm():
    from semseg.engine.setup import build_model

    cfg = load_config(None, ["model.name=lraspp_mobilenet_v3_large", "model.bn_momentum=0.1"])
    model = build_model(cfg, 11, [str(i) for i in range(11)], [[i, i, i] for i in range(11)])
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}  # torchvision's MobileNetV3 builds them with 0.01


def test_model_norm_ibn_builds_ibn_into_the_model_so_checkpoints_rebuild_it():
    from semseg.engine.setup import build_model
    from semseg.models.norms import InstanceBatchNorm2d

    cfg = load_config(None, ["model.name=lraspp_mobilenet_v3_large", "model.norm=ibn", "model.bn_momentum=0.1",
                             "model.kwargs={ibn_max_stride: 4}"])
    model = build_model(cfg, 11, [str(i) for i in range(11)], [[i, i, i] for i in range(11)])
    assert model.model_kwargs == {"norm": "ibn", "ibn_max_stride": 4}
    layers = [m for m in model.modules() if isinstance(m, InstanceBatchNorm2d)]
    assert layers and {layer.batch.momentum for layer in layers} == {0.1}
    clash = load_config(None, ["model.norm=ibn", "model.kwargs={norm: gn}"])
    with pytest.raises(SemsegError, match="'model.norm' \\(ibn\\) and 'model.kwargs.norm' \\(gn\\) disagree"):
        build_model(clash, 11, [str(i) for i in range(11)], [[i, i, i] for i in range(11)])


def test_the_ema_warms_up_its_decay_and_forgets_the_initial_weights():
    from semseg.engine.setup import build_ema

    model = torch.nn.Linear(1, 1, bias=False)
    ema = build_ema(model, decay=0.999)
    weights = [3.0] + [float(step % 7) for step in range(1, 2370)]  # the first update copies; then 2369 averages
    expected = None
    for update, value in enumerate(weights):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        # the reference: a copy, then decay (1 + n) / (10 + n) capped at 0.999 for the n-th average
        decay = min(0.999, (1 + update - 1) / (10 + update - 1)) if update else None
        expected = value if expected is None else decay * expected + (1 - decay) * value
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5)
    # the first weights' share of the average after 2370 updates: with torch's fixed decay 0.999 it is 9%
    fresh = build_ema(model, decay=0.999)
    for value in [1.0] + [0.0] * 2369:
        with torch.no_grad():
            model.weight.fill_(value)
        fresh.update_parameters(model)
    assert 0 <= fresh.module.weight.item() < 1e-6


def test_freeze_then_unfreeze_encoder(tiny_camvid, tmp_path):
    run = tmp_path / "run"
    assert _train(run, tiny_camvid, "train.epochs=2", "train.freeze_encoder_epochs=1", "train.val_every=2") == 0
    # epoch 1 trained the head only; epoch 2 everything: check via the checkpoint history
    assert [line["epoch"] for line in _metrics(run)] == [1, 2]


def test_early_stopping(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, tiny_camvid, "train.epochs=10", "train.lr=1e-9", "train.early_stop_patience=1") == 0
    assert len(_metrics(run)) < 10
    assert "early stop" in capsys.readouterr().out


class _StepClock(RunClock):
    """A run clock on which every optimizer step takes exactly one second."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fake_s = 0.0

    def elapsed(self) -> float:
        return self.offset + self.fake_s

    def tick(self) -> float:
        self.fake_s += 1.0
        return super().tick()


def test_time_budget_stops_after_a_validated_epoch(tiny_camvid, tmp_path, monkeypatch, capsys):
    from semseg.engine import setup

    monkeypatch.setattr(setup, "RunClock", _StepClock)  # 1 s a step on any machine, loaded or fast
    run = tmp_path / "run"
    assert _train(run, tiny_camvid, "train.epochs=50", "train.val_every=10", "train.time_limit_minutes=0.001") == 0
    lines = _metrics(run)
    # the budget is checked after every step: the first step spends it, the epoch is cut short and validated
    assert len(lines) == 1 and "miou" in lines[0] and lines[0]["batches"] == 1
    assert (run / "best.pt").is_file()
    assert lines[0]["lr"] == 0.01  # the lr the one step used
    assert torch.load(run / "last.pt", weights_only=True)["scheduler"]["_last_lr"][0] == 0.0  # then decayed to its end
    assert "time budget of 0.001 min spent after batch 1/2 of epoch 1: stopping" in capsys.readouterr().out


def test_time_budget_is_checked_per_step_and_the_schedule_spans_it(tiny_camvid, tmp_path, monkeypatch, capsys):
    from semseg.engine import setup

    monkeypatch.setattr(setup, "RunClock", _StepClock)
    run = tmp_path / "run"
    # 4 steps an epoch (batch 1), 15 s of budget at 1 s a step: three whole epochs, then 3 steps of the fourth
    assert _train(run, tiny_camvid, "train.epochs=50", "train.batch_size=1", "train.val_every=100",
                  "train.time_limit_minutes=0.25", "train.poly_power=1.0") == 0
    lines = _metrics(run)
    assert [line["batches"] for line in lines] == [4, 4, 4, 3] and "miou" in lines[-1]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 15
    # poly over the budget, not over 50 epochs: the lr of step k is 0.01 * (1 - (k - 1) / 15), never 0 while training...
    for line, step in zip(lines, (4, 8, 12, 15)):
        assert line["lr"] == pytest.approx(0.01 * (1 - (step - 1) / 15))
    assert state["scheduler"]["_last_lr"][0] == 0.0  # ...and reaches 0 at the step that spends the budget
    assert "time budget of 0.25 min spent after batch 3/4 of epoch 4: stopping" in capsys.readouterr().out


def test_run_clock_keeps_a_reserve_for_the_final_validation(monkeypatch):
    from semseg.engine import trainer

    now = [100.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: now[0])
    clock = RunClock(1.0, already_spent_s=30.0, reserve_s=10.0)  # 60 s budget, 30 s spent before a resume
    assert clock.tick() == pytest.approx(30 / 50) and not clock.out_of_time
    now[0] += 20.0
    assert clock.tick() == pytest.approx(1.0) and clock.out_of_time  # 50 s of training + 10 s reserved = the budget
    clock.reserve_s = 1000.0  # a reserve never takes more than half the budget
    assert clock.progress() == pytest.approx(50 / 30)
    assert RunClock(None).tick() == 0.0 and not RunClock(None).out_of_time


def test_lr_schedules():
    cfg = TrainConfig(schedule="poly", poly_power=1.0, warmup_factor=0.1)
    assert lr_factor(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cfg) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, cfg) == pytest.approx(0.0)
    cosine = TrainConfig(schedule="cosine")
    assert lr_factor(50, 100, 0, cosine) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, cosine) == pytest.approx(0.0)
    # a time budget spent faster than the steps moves the schedule on
    assert lr_factor(10, 100, 0, cfg, time_progress=0.5) == pytest.approx(0.5)
    assert lr_factor(60, 100, 0, cfg, time_progress=0.5) == pytest.approx(0.4)


def test_parameter_groups_skip_decay_on_norms_and_biases():
    from semseg.models import create_model

    model = create_model("lraspp_mobilenet_v3_large", num_classes=3)
    optimizer = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=1e-4, head_lr_mult=10))
    encoder = {id(p) for p in model.encoder_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["weight_decay"] == (1e-4 if p.ndim > 1 else 0.0)
            assert group["lr"] == pytest.approx(0.1 if id(p) in encoder else 1.0)
    total = sum(len(g["params"]) for g in optimizer.param_groups)
    assert total == len(list(model.parameters()))


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_match_one(tiny_camvid, tmp_path):
    # No random augmentation, BatchNorm synchronized over the processes (model.norm=syncbn: semseg's cross-process
    # BatchNorm on the CPU; plain BatchNorm in one process), and no void pixels (each rank averages its loss over
    # its own labelled pixels): then 2 processes x batch 1 == 1 process x batch 2. NCHW: PyTorch's own CPU
    # BatchNorm backward in channels_last was 1% off a float64 reference on two 128x160 CamVid crops (7% on
    # one layer's weight gradient) and moved this test's second-epoch loss by 2e-4; in NCHW it agrees with
    # the reference, as the cross-process BatchNorm does in either layout.
    root = tmp_path / "data"
    shutil.copytree(tiny_camvid, root)
    for mask in root.glob("*annot/*.png"):
        labels = np.asarray(Image.open(mask))
        Image.fromarray(np.where(labels == 11, 0, labels).astype(np.uint8)).save(mask)
    same = ["data.scale_range=[1.0,1.0]", "data.crop_size=[64,80]", "data.hflip=false", "data.photometric=false",
            "model.norm=syncbn", "train.channels_last=false", "train.epochs=2"]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for nproc, run in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        args = [torchrun, "--standalone", f"--nproc-per-node={nproc}", "-m", "semseg", "train", "--run-dir", str(run),
                f"data.root={root}", *FAST, *same]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("run folder:") == 1  # rank 0 alone prints
    # semseg's own launcher: the same group of two processes, each given one of the two threads
    launched = subprocess.run([sys.executable, "-m", "semseg", "train", "--processes", "2", "--run-dir",
                               str(tmp_path / "own"), f"data.root={root}", *FAST, *same],
                              capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"), timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("run folder:") == 1 and "2 processes (DDP)" in launched.stdout + launched.stderr
    one, two, own = _metrics(tmp_path / "one"), _metrics(tmp_path / "two"), _metrics(tmp_path / "own")
    assert len(one) == len(two) == len(own) == 2
    for a, b, c in zip(one, two, own):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) == c["train_loss"]
        assert a["miou"] == pytest.approx(b["miou"], abs=1e-4) == c["miou"]
    # the gallery shows the whole val set under DDP too (each rank evaluates one of the 2 frames)
    with Image.open(tmp_path / "one" / "val_gallery.png") as a, Image.open(tmp_path / "two" / "val_gallery.png") as b:
        assert a.size == b.size
        assert (np.asarray(a.convert("RGB")) != np.asarray(b.convert("RGB"))).any(axis=2).mean() < 0.01
    # computed class weights: the ranks count a share of the masks each and add them up, to the weights of all
    weighted = ["train.epochs=1", "train.class_weights=median_freq", "train.reports=false"]
    launched = subprocess.run([sys.executable, "-m", "semseg", "train", "--processes", "2", "--run-dir",
                               str(tmp_path / "weighted"), f"data.root={root}", *FAST, *same, *weighted],
                              capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"), timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    from semseg.data import build_dataset
    from semseg.engine.setup import resolve_class_weights

    cfg = load_config(None, [f"data.root={root}", *FAST, *same, *weighted])
    expected = resolve_class_weights(cfg, build_dataset(cfg.data, cfg.data.train_split))
    weights = load_checkpoint(tmp_path / "weighted" / "last.pt")["class_weights"]
    assert weights == pytest.approx(expected, rel=1e-6) and len(set(expected)) > 1


def test_ddp_trains_a_model_whose_aux_head_is_switched_off(tiny_camvid, tmp_path):
    # train.aux_weight=0 leaves the aux head out of the forward; DDP refuses weights that get no gradient
    # unless they are held still
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "semseg", "train", "--processes", "2", "--run-dir", str(run),
                           f"data.root={tiny_camvid}", *FAST, "train.epochs=2", "train.aux_weight=0",
                           "model.kwargs={aux_loss: true}", "train.reports=false"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line["epoch"] for line in _metrics(run)] == [1, 2]
    assert any(key.startswith("net.aux_classifier.") for key in load_checkpoint(run / "last.pt")["model"])


def test_without_aux_loss_only_the_training_heads_are_held_still():
    from semseg.engine.step import train_forward
    from semseg.models import create_model

    model = create_model("lraspp_mobilenet_v3_large", 3, aux_loss=True)
    assert train_forward(model, 0.4).with_aux and all(p.requires_grad for p in model.parameters())
    assert not train_forward(model, 0.0).with_aux
    still = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert still and all(name.startswith("net.aux_classifier.") for name in still)
    assert len(still) == len([n for n, _ in model.named_parameters() if n.startswith("net.aux_classifier.")])


def test_launched_processes_get_their_ranks_and_threads_and_a_failure_stops_the_rest():
    from semseg.engine.distributed import launch_local

    # rank 1 fails at once; rank 0 would sleep for a minute, as a rank blocked in a collective waits for its peer
    script = ("import os, sys, time; rank = int(os.environ['RANK']); "
              "print('rank', rank, 'of', os.environ['WORLD_SIZE'], 'threads', os.environ['OMP_NUM_THREADS'], "
              "os.environ['LOCAL_RANK'], os.environ['MASTER_ADDR'], flush=True); "
              "sys.exit(3) if rank == 1 else time.sleep(60)")
    started = time.monotonic()
    exits = launch_local([sys.executable, "-c", script], processes=2, threads_per_process=1)
    assert time.monotonic() - started < 30
    assert [(end.rank, end.returncode, end.stopped) for end in exits] == [(1, 3, False), (0, -signal.SIGTERM, True)]
    assert exits[0].output.strip() == "rank 1 of 2 threads 1 1 127.0.0.1"  # kept; rank 0's went to the console
    ok = launch_local([sys.executable, "-c", "import os; assert os.environ['OMP_NUM_THREADS'] == '2'"], 2, 2)
    assert sorted(end.returncode for end in ok) == [0, 0]


def test_processes_bad_inputs(tiny_camvid, tmp_path, capsys, monkeypatch):
    from semseg.engine import distributed

    run = ["train", "--run-dir", str(tmp_path / "run"), f"data.root={tiny_camvid}", *FAST]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    for processes, message in (("0", "--processes must be 1 or more, not 0"),
                               ("3", "--processes 3 is more than the 2 CPU thread(s) this command may use")):
        assert main([*run, "--processes", processes]) == 2
        assert message in capsys.readouterr().err
    assert main([*run, "--processes", "2", "train.bogus=1"]) == 2  # checked before any process starts
    assert "unknown config key 'train.bogus'" in capsys.readouterr().err
    # a rank other than 0 failing alone: its last lines, once
    monkeypatch.setattr(distributed, "launch_local", lambda command, processes, threads: [
        distributed.RankExit(1, 1, False, "Traceback (most recent call last):\nRuntimeError: out of memory\n"),
        distributed.RankExit(0, -15, True, "")])
    assert main([*run, "--processes", "2"]) == 1
    err = capsys.readouterr().err
    assert "semseg: process 1 of 2 failed (exit status 1); its last lines:" in err and err.count("out of memory") == 1
    monkeypatch.setattr(distributed, "launch_local", lambda command, processes, threads: [
        distributed.RankExit(0, -15, True, ""),
        distributed.RankExit(1, 2, False, "model lraspp...\nsemseg: error: 2 processes, 1 CUDA device(s)\n")])
    assert main([*run, "--processes", "2"]) == 2
    assert capsys.readouterr().err == "semseg: error: process 1 of 2: 2 processes, 1 CUDA device(s)\n"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*run, "--processes", "2"]) == 2
    assert "under torchrun leave it out" in capsys.readouterr().err


def test_demo_trains_evaluates_and_predicts_the_held_back_frame(tmp_path, capsys, monkeypatch):
    from semseg import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_PATH", tmp_path / "no_default_model.pt")
    run = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run), "--minutes", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "held-back frame 0016E5_08025.png, the demo model:" in out and "default" not in out.split("trained")[1]
    assert (run / "prediction" / "0016E5_08025_overlay.png").is_file() and (run / "best.pt").is_file()
    frame = Path(__file__).resolve().parents[1] / "semseg" / "assets" / "demo" / "test" / "0016E5_08025.png"
    with Image.open(run / "prediction" / "0016E5_08025_overlay.png") as shown, Image.open(frame) as source:
        assert shown.width > source.width  # the overlay, with its legend beside it
    assert "miou" in _metrics(run)[-1]
    assert main(["demo", "--run-dir", str(run)]) == 2  # never overwrites a run
    assert "already holds a demo run" in capsys.readouterr().err


def test_training_from_an_adjusted_export_starts_without_its_logit_offset(tmp_path):
    from dataclasses import replace

    from semseg.engine.setup import build_model
    from semseg.models import create_model

    model = create_model("lraspp_mobilenet_v3_large", num_classes=3).eval()
    model.pretrained_cfg = replace(model.pretrained_cfg, logit_offset=(0.1, -0.2, 0.3))
    save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                     "model": model.state_dict()}, tmp_path / "exported.pt")
    cfg = load_config(None, ["model.name=lraspp_mobilenet_v3_large", f"model.pretrained={tmp_path / 'exported.pt'}"])
    trained_on = build_model(cfg, 3, ["a", "b", "c"], [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    assert trained_on.pretrained_cfg.logit_offset is None
    torch.testing.assert_close(trained_on.state_dict()["net.classifier.high_classifier.bias"],
                               model.state_dict()["net.classifier.high_classifier.bias"])  # the weights did load


def test_class_mix_mixes_every_training_batch_and_only_those(tiny_camvid, tmp_path, monkeypatch):
    from semseg.data import mixing
    from semseg.engine import loop

    seen = []

    def spy(images, masks, probability, ignore_index, generator=None):
        mixed = mixing.class_mix(images, masks, probability, ignore_index, generator)
        seen.append((images.shape[0], probability, ignore_index, not torch.equal(mixed[1], masks)))
        return mixed

    monkeypatch.setattr(loop, "class_mix", spy)
    assert _train(tmp_path / "run", tiny_camvid, "train.epochs=1", "data.class_mix=1.0") == 0
    assert seen and all(n >= 2 and p == 1.0 and ignore == 255 for n, p, ignore, _ in seen)
    assert any(changed for *_, changed in seen)
    seen.clear()
    assert _train(tmp_path / "off", tiny_camvid, "train.epochs=1") == 0
    assert seen == []  # off by default
