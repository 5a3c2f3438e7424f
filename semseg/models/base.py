"""The one model contract: :class:`SegModel`, which carries its metadata as ``pretrained_cfg`` (a :class:`~semseg.meta.ModelMeta`).

Every zoo model, whatever library built it, is a :class:`SegModel`:
``model(x)`` with ``x: float[N,3,H,W]`` returns logits ``float[N,C,H,W]`` at the
input size, for any H and W. Architectures that need sizes divisible by their
stride get the input zero-padded on the bottom and right to ``size_divisor``
inside ``forward`` and the logits cropped back. Zero is the dataset's mean
colour once the image is normalized, so the padding looks like a plain border;
unlike reflect padding it works for inputs smaller than the pad and exports to
ONNX as a constant pad. The library's own module lives at ``model.net``.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.meta import ModelMeta


# The timm name of the metadata type; the same class as semseg.meta.ModelMeta.
PretrainedCfg = ModelMeta


# Norm layers whose running statistics must stay still while the encoder is frozen.
_STAT_NORMS = nn.modules.batchnorm._NormBase


class SegModel(nn.Module):
    """A segmentation network under the semseg contract.

    ``net`` is the library's module; ``encoder_path`` names its encoder inside
    this model (``"net.backbone"``, ``"net.encoder"``). Subclasses whose
    ``net`` does not return logits by itself override :meth:`_logits`.
    ``create_model`` sets ``model_name``, ``model_kwargs`` and ``pretrained_cfg``.
    """

    # state-dict prefixes of the heads that serve training only (aux heads, boosters, boundary heads): an
    # inference export leaves them out, and a weights file may lack them (they keep their initialization)
    # or hold them while the model lacks them
    training_only_prefixes: tuple[str, ...] = ()

    def __init__(self, net: nn.Module, num_classes: int, encoder_path: str, size_divisor: int = 1,
                 has_aux: bool = False) -> None:
        super().__init__()
        self.net = net
        self.encoder_path = encoder_path
        self.size_divisor = size_divisor
        self.has_aux = has_aux
        self.model_name = ""
        self.model_kwargs: dict[str, Any] = {}
        self.pretrained_cfg = ModelMeta(num_classes=num_classes)
        self._encoder_frozen = False

    # ------------------------------------------------------------------ forward
    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        """``x: float[N,3,H,W]`` with H, W multiples of ``size_divisor`` -> ``{"out": [N,C,H,W]}`` (+ the
        training heads' outputs, see :meth:`forward_aux`)."""
        return {"out": self.net(x)}

    def _padded(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        if self.size_divisor == 1:
            return self._logits(x, with_aux)
        height, width = x.shape[-2:]
        # sizes from shapes, not values: the ONNX graph keeps them symbolic
        pad_h, pad_w = (-height) % self.size_divisor, (-width) % self.size_divisor
        outputs = self._logits(F.pad(x, (0, pad_w, 0, pad_h)), with_aux)
        return {key: value[..., :height, :width] for key, value in outputs.items()}

    def forward(self, x: Tensor) -> Tensor:
        """``x: float[N,3,H,W]`` (normalized) -> logits ``float[N,C,H,W]``; the aux head, if any, is not run.

        Adds ``pretrained_cfg.logit_offset`` (one value per class) where the metadata has one, so every
        path that runs the model (prediction, ``val``, exported graphs) applies it; training's
        :meth:`forward_aux` does not.
        """
        logits = self._padded(x, with_aux=False)["out"]
        offset = self.pretrained_cfg.logit_offset
        if offset is None:
            return logits
        if len(offset) != logits.shape[1]:
            raise SemsegError(f"pretrained_cfg.logit_offset has {len(offset)} values but the model predicts "
                              f"{logits.shape[1]} classes")
        return logits + torch.tensor(offset, dtype=logits.dtype, device=logits.device).view(1, -1, 1, 1)

    def forward_aux(self, x: Tensor) -> dict[str, Tensor]:
        """For training: ``{"out": logits[N,C,H,W], "aux": logits[N,C,H,W]}``; ``"aux"`` only when ``has_aux``.

        Models with several auxiliary heads add ``"aux2"``, ``"aux3"``, ... (class
        logits, each trained like ``"aux"``); a boundary head adds ``"boundary":
        float[N,1,H,W]`` logits (trained with :func:`semseg.losses.boundary.boundary_loss`).
        """
        return self._padded(x, with_aux=self.has_aux)

    # ------------------------------------------------------------------ parts
    @property
    def encoder(self) -> nn.Module:
        return self.get_submodule(self.encoder_path)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the encoder: decoder, heads, aux head."""
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return (p for p in self.parameters() if id(p) not in encoder_ids)

    # ------------------------------------------------------------------ freezing
    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) training the encoder: no gradients, and its norm statistics held still.

        While frozen, the encoder's BatchNorm layers stay in eval mode even
        through ``model.train()``, so their running mean and variance keep the
        values they had (the pretrained ones, typically).
        """
        for param in self.encoder.parameters():
            param.requires_grad_(not frozen)
        self._encoder_frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> SegModel:
        super().train(mode)
        if self._encoder_frozen:
            for module in self.encoder.modules():
                if isinstance(module, _STAT_NORMS):
                    module.eval()
        return self

    @property
    def encoder_frozen(self) -> bool:
        return self._encoder_frozen

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, size_divisor={self.size_divisor}, has_aux={self.has_aux}"


def is_encoder_key(model: SegModel, key: str) -> bool:
    """Whether state-dict entry ``key`` belongs to the encoder."""
    return key.startswith(model.encoder_path + ".")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
