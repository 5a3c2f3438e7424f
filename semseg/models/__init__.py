"""The model zoo: one :func:`create_model` over torchvision, segmentation_models_pytorch and FCN-8s.

>>> model = create_model("unet_resnet18", num_classes=11)
>>> logits = model(images)                    # float[N,3,H,W] -> float[N,11,H,W], any H, W
>>> outputs = model.forward_aux(images)       # {"out": ..., "aux": ...} for training
>>> list_models("deeplab*")

See docs/models.md for the contract, the names and the weights.
"""

from semseg.meta import ModelMeta
from semseg.models.base import PretrainedCfg, SegModel
from semseg.models.factory import create_model, load_model, load_torch_model
from semseg.models.norms import convert_norm
from semseg.models.registry import list_models, register_model
from semseg.models.weights import load_weights

__all__ = [
    "ModelMeta",
    "PretrainedCfg",
    "SegModel",
    "convert_norm",
    "create_model",
    "list_models",
    "load_model",
    "load_torch_model",
    "load_weights",
    "register_model",
]
