"""What a run saves and restores: RNG states, the checkpoint dict of a :class:`Trainer`, the metrics log.

Exact resume: at the start of every epoch the Python, NumPy and torch RNGs, the
shuffling sampler and the DataLoader's worker seeds are all re-seeded from
``(train.seed, epoch)``. An epoch's result therefore depends only on the state
saved at the end of the previous epoch (weights, optimizer, scheduler, scaler,
EMA), which ``last.pt`` holds; a run killed at any point and resumed from
``last.pt`` redoes the interrupted epoch and ends with the same weights.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch

from semseg.config import to_dict
from semseg.engine.trainer import Trainer
from semseg.errors import SemsegError
from semseg.io import write_text_atomic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; NumPy and random follow it.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


def checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    model = trainer.model
    state = {
        "model_name": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "model_meta": model.pretrained_cfg.to_dict(),
        "model": trainer.eval_model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "rng": rng_state(),
        "config": to_dict(trainer.cfg),
        "best_miou": trainer.best_miou,
        "best_epoch": trainer.best_epoch,
        "stale_validations": trainer.stale_validations,
        "class_weights": trainer.class_weights,
        "history": trainer.history,
        "metrics": trainer.history[-1] if trainer.history else {},
        "best_scores": trainer.best_scores,
        "class_pixels": trainer.class_pixels,
        "precision": trainer.precision,  # what train.precision=auto chose: a resumed run keeps it
    }
    if trainer.ema is not None:
        state["train_model"] = model.state_dict()
        state["ema"] = trainer.ema.state_dict()
    return state


# what only resuming needs: best.pt leaves it out (a third of the size for Adam-type optimizers)
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "ema", "train_model", "rng")


def best_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the resume-only entries: what ``best.pt`` holds (weights, metadata, config, scores)."""
    return {key: value for key, value in state.items() if key not in RESUME_KEYS}


def restore_state(trainer: Trainer, state: dict[str, Any]) -> None:
    trainer.model.load_state_dict(state["train_model"] if trainer.ema is not None else state["model"])
    if trainer.ema is not None:
        if "ema" not in state:
            raise SemsegError("the checkpoint was trained without EMA; resume with train.ema=false")
        trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.step = state["epoch"], state["step"]
    trainer.saved_epoch = trainer.epoch
    trainer.best_miou, trainer.best_epoch = state["best_miou"], state["best_epoch"]
    trainer.stale_validations = state.get("stale_validations", 0)
    trainer.history = list(state.get("history", []))
    trainer.best_scores = state.get("best_scores")
    set_rng_state(state["rng"])


def write_metrics_log(trainer: Trainer) -> None:
    lines = "".join(json.dumps(entry) + "\n" for entry in trainer.history)
    write_text_atomic(trainer.run_dir / "metrics.jsonl", lines)
