"""What the real-time families share under the model contract: the :class:`SegModel` wrapper and the weights rule.

Each family's ``net`` has ``forward(x, with_aux) -> dict``: ``{"out": logits}``
in eval, plus its training heads with ``with_aux`` (``"aux"``, ``"aux2"``, ...,
and ``"boundary"`` for PIDNet), every output at the (padded) input size.
``net.backbone`` (``net.encoder`` for ERFNet) is the feature extractor; the
heads are the rest.
"""

from __future__ import annotations

from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.models.base import SegModel


class RealtimeSegModel(SegModel):
    """A real-time family's network: ``net(x, with_aux)`` already returns the dict of outputs.

    ``net.training_heads`` (where the family has training heads) names its
    submodules that only :meth:`forward_aux` runs; they become the model's
    ``training_only_prefixes``.
    """

    def __init__(self, net: nn.Module, num_classes: int, encoder_path: str, size_divisor: int = 1,
                 has_aux: bool = False) -> None:
        super().__init__(net, num_classes, encoder_path, size_divisor, has_aux)
        self.training_only_prefixes = tuple(f"net.{name}." for name in getattr(net, "training_heads", ()))

    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        return self.net(x, with_aux)


def refuse_pretrained(name: str, pretrained: bool) -> None:
    """``pretrained=True`` fails at once: no library semseg uses ships weights for these networks."""
    if pretrained:
        raise SemsegError(
            f"model {name!r}: no published weights that semseg can download (the authors' ImageNet or Cityscapes "
            "files are on file-sharing sites, not in a library cache). Train it from scratch (pretrained=False, "
            "what it is meant for here), or pass pretrained='/path/to/weights.pth': a semseg checkpoint or a "
            "state dict of this model"
        )
