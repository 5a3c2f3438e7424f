"""ONNX export with the model's metadata, a parity check against PyTorch, and an ONNX Runtime model.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): with
torch 2.14 it exports every curated zoo model, the in-model padding to the
stride included, and its graphs run in ONNX Runtime at any size when exported
``dynamic``. The metadata (class names, palette, mean, std, input size, number
of classes, ignore index) is stored as JSON strings in the ONNX model's
``metadata_props``, so ``semseg predict --onnx`` needs no PyTorch model code.
Every export is checked: logits of PyTorch and ONNX Runtime are compared on
random and structured inputs, and an argmax agreement below 99.9% fails it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.inference import Size, _pair, load_torch_model, normalize
from semseg.meta import ModelMeta, check_tta_scales
from semseg.io import list_images, read_image, write_bytes_atomic

PARITY_MIN_AGREEMENT = 0.999
DEFAULT_EXPORT_SIZE = (512, 512)
# Zoo models that cannot be exported, with the reason. Empty: every curated model
# exports and passes the parity check (tests/test_export.py checks them all).
NOT_EXPORTABLE: dict[str, str] = {}
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_onnx(
    model: nn.Module, path: str | os.PathLike, input_size: Size = DEFAULT_EXPORT_SIZE, dynamic: bool = False, opset: int = 17
) -> Path:
    """Write ``model`` as an ONNX graph ``image float[N,3,H,W] -> logits float[N,C,H,W]`` with its metadata.

    The batch dimension is always dynamic; height and width only with
    ``dynamic=True`` (else the graph takes ``input_size`` alone). The file is
    written atomically. Returns ``path``.
    """
    import onnx

    name = getattr(model, "model_name", None) or type(model).__name__
    if name in NOT_EXPORTABLE:
        raise SemsegError(f"model {name} cannot be exported to ONNX: {NOT_EXPORTABLE[name]}")
    if dynamic and (reason := fixed_size_only(model)):
        raise SemsegError(f"model {name} cannot be exported with --dynamic: {reason}; export it for one --size H W")
    height, width = _pair(input_size, "input size")
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    example = torch.randn(1, 3, height, width)
    try:
        graph = _export_torchscript(model, example, dynamic, opset)
    except Exception as exc:  # the exporter raises many types; the user needs the model name and the cause
        if dynamic:
            raise SemsegError(f"model {name} could not be exported to ONNX: {_first_line(exc)}") from exc
        try:  # torch.export sees fixed sizes where TorchScript traced them as values (e.g. PSPNet's pooling)
            graph = _export_dynamo(model, example, opset)
        except Exception as dynamo_exc:
            raise SemsegError(
                f"model {name} could not be exported to ONNX: {_first_line(exc)} (torch.export: {_first_line(dynamo_exc)})"
            ) from dynamo_exc
    onnx.helper.set_model_props(graph, _metadata(model, (height, width), dynamic))
    path = Path(path)
    write_bytes_atomic(path, graph.SerializeToString())
    return path


def fixed_size_only(model: nn.Module) -> str | None:
    """Why ``model`` cannot be exported for any input size, or None.

    Adaptive pooling to a grid of several bins (PSPNet's pyramid pooling) has
    kernel sizes that depend on the input size; ONNX has no operator for it, and
    the exported graph would silently keep the sizes of the example input
    (measured: 94% argmax agreement at another size). Pooling to one bin is a
    plain mean and exports fine.
    """
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = module.output_size
            bins = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            if any(b not in (1, None) for b in bins):
                grid = "x".join(str(b) for b in bins)
                return f"its {module_name} pools to a fixed {grid} grid, which ONNX can only express for a fixed input size"
    return None


def _export_torchscript(model: nn.Module, example: Tensor, dynamic: bool, opset: int) -> Any:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # "might not generalize" warnings about shape-dependent Python code: the parity check
        # (on another size too, for dynamic graphs) is what tells whether the graph generalizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
        )
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(model: nn.Module, example: Tensor, opset: int) -> Any:
    """The torch.export-based exporter, for a fixed height and width; needs opset 18 or later.

    The batch stays dynamic where the model allows it (``Dim.AUTO``); a model
    whose code fixes it (UperNet's ConvNeXt norms) gets a batch-1 graph, which
    :class:`OnnxModel` feeds one image at a time.
    """
    batch = torch.export.Dim.AUTO
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto


def _first_line(exc: BaseException) -> str:
    """Exporter messages run to pages (whole graphs, wrapped causes): the root cause's first sentence."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().split("  [Caused by")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _metadata(model: nn.Module, input_size: Size, dynamic: bool) -> dict[str, str]:
    """``metadata_props``: the model's :class:`ModelMeta` (at the export size) plus ``model_name`` and ``dynamic``."""
    values = {
        **ModelMeta.of(model).to_dict(),
        "input_size": list(input_size),
        "model_name": getattr(model, "model_name", None),
        "dynamic": dynamic,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def read_onnx_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Parse ``metadata_props`` (a name -> JSON string map) into plain values."""
    values: dict[str, Any] = {}
    for key, text in props.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            raise SemsegError(f"ONNX metadata entry {key!r} is not JSON: {text[:80]!r}") from None
    return values


class OnnxModel:
    """An exported model run by ONNX Runtime, usable wherever a model is (e.g. by :class:`Predictor`).

    ``model(images float[N,3,h,w]) -> logits float[N,C,h,w]``; ``pretrained_cfg``
    holds the metadata read from the file (ImageNet mean/std when it has none);
    ``fixed_input_size`` is ``(H, W)`` for a graph exported without ``dynamic``.
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise SemsegError(f"{self.path}: ONNX file not found")
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, ...)
            raise SemsegError(f"{self.path}: not a readable ONNX model ({str(exc).splitlines()[0]})") from None
        props = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.pretrained_cfg = ModelMeta.from_dict(props)
        self.model_name = props.get("model_name")
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        shape = graph_input.shape if len(graph_input.shape) == 4 else [None] * 4
        spatial = shape[2:]
        self.fixed_input_size = tuple(spatial) if all(isinstance(d, int) for d in spatial) else None
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.dynamic = self.fixed_input_size is None

    def __call__(self, images: Tensor) -> Tensor:
        inputs = np.ascontiguousarray(images.detach().cpu().float().numpy())
        step = self.fixed_batch or len(inputs)
        outputs = [self.session.run(None, {self.input_name: inputs[i : i + step]})[0] for i in range(0, len(inputs), step)]
        return torch.from_numpy(np.concatenate(outputs))


# ------------------------------------------------------------------ parity
def parity_inputs(input_size: Size, mean: Sequence[float], std: Sequence[float], dynamic: bool = False) -> list[Tensor]:
    """Normalized sample batches ``[N, 3, H, W]``: random noise, flat grey, gradients, a checkerboard and a street frame.

    With ``dynamic`` an odd-sized batch checks that the graph really takes other sizes.
    """
    height, width = input_size
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)
    grey = torch.full((1, 3, height, width), 128, dtype=torch.uint8)
    ramp_y = torch.linspace(0, 255, height).view(height, 1).expand(height, width)
    ramp_x = torch.linspace(0, 255, width).view(1, width).expand(height, width)
    gradient = torch.stack([ramp_y, ramp_x, 255 - ramp_x]).round().to(torch.uint8)[None]
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    checker = ((((yy // 16) + (xx // 16)) % 2) * 255).to(torch.uint8).expand(3, height, width)[None]
    batches = [noise, grey, gradient, checker, _street_frame(input_size)]
    if dynamic:
        odd = (max(8, height * 3 // 4 + 1), max(8, width * 5 // 4 + 3))
        batches.append(torch.randint(0, 256, (1, 3, *odd), generator=generator, dtype=torch.uint8))
    return [normalize(batch, mean, std) for batch in batches]


def _street_frame(size: Size) -> Tensor:
    """A CamVid frame shipped in the package, resized to ``size``: uint8 ``[1, 3, H, W]``."""
    from PIL import Image

    frame = list_images(Path(str(resources.files("semseg"))) / "assets" / "demo" / "val")[0]
    rgb = Image.fromarray(read_image(frame)).resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None]


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, inputs: Sequence[Tensor]) -> dict[str, Any]:
    """Compare PyTorch (fp32) and ONNX Runtime logits on normalized ``inputs`` (batches ``[N, 3, H, W]``).

    Returns ``max_abs_diff`` (largest logit difference), ``agreement`` (fraction
    of pixels with the same argmax), ``pixels`` and ``batches``.
    """
    return compare_logits(model, OnnxModel(onnx_path, device="cpu"), inputs, f"{onnx_path}: ONNX")


def compare_logits(model: nn.Module, candidate: Any, inputs: Sequence[Tensor], label: str) -> dict[str, Any]:
    """Logits of ``candidate`` (a callable) against ``model``'s fp32 logits; see :func:`check_parity`."""
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    max_diff, same, pixels = 0.0, 0, 0
    for batch in inputs:
        with torch.inference_mode():
            expected = model(batch).float()
            got = candidate(batch).float()
        if got.shape != expected.shape:
            raise SemsegError(f"{label} output shape {list(got.shape)} differs from PyTorch's {list(expected.shape)}")
        max_diff = max(max_diff, float((got - expected).abs().max()))
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return {"max_abs_diff": max_diff, "agreement": same / pixels, "pixels": pixels, "batches": len(inputs)}


def export_checked(
    model: nn.Module, path: str | os.PathLike, input_size: Size = DEFAULT_EXPORT_SIZE, dynamic: bool = False, opset: int = 17
) -> dict[str, Any]:
    """Export, then check parity on :func:`parity_inputs`; a failed check removes the file and raises."""
    path = export_onnx(model, path, input_size, dynamic, opset)
    meta = ModelMeta.of(model)
    report = check_parity(model, path, parity_inputs(_pair(input_size, "input size"), meta.mean, meta.std, dynamic))
    _fail_unless_parity(report, path, "ONNX Runtime agrees with PyTorch")
    return report


def _fail_unless_parity(report: dict[str, Any], path: Path, who_agrees: str) -> None:
    """Remove ``path`` and raise when the argmax agreement of ``report`` is below the parity threshold."""
    if report["agreement"] < PARITY_MIN_AGREEMENT:
        path.unlink(missing_ok=True)
        raise SemsegError(
            f"{path}: parity check failed: {who_agrees} on {100 * report['agreement']:.3f}% of pixels "
            f"(needs {100 * PARITY_MIN_AGREEMENT:.1f}%), max logit difference {report['max_abs_diff']:.3g}; file removed"
        )


# ------------------------------------------------------------------ inference checkpoints
# what an inference checkpoint keeps of a training checkpoint besides the model: how it was made
PROVENANCE_KEYS = ("config", "metrics", "best_miou", "best_epoch", "epoch", "class_weights")


def export_checkpoint(
    model: nn.Module, path: str | os.PathLike, half: bool = False, provenance: dict[str, Any] | None = None
) -> Path:
    """Write an inference checkpoint: the weights (float16 with ``half``: half the size) and the metadata.

    It loads like any semseg checkpoint (:func:`semseg.models.load_model`,
    ``--checkpoint``), back into float32 weights; no optimizer state is kept.
    ``provenance``: entries of the training checkpoint to keep (its config and scores).
    """
    from semseg.checkpoint import save_checkpoint

    weights = {
        key: value.detach().cpu().half() if half and value.is_floating_point() else value.detach().cpu()
        for key, value in model.state_dict().items()
    }
    state = {key: value for key, value in (provenance or {}).items() if key in PROVENANCE_KEYS}
    state.update(
        model_name=model.model_name, model_kwargs=dict(model.model_kwargs),
        model_meta=model.pretrained_cfg.to_dict(), model=weights,
    )
    save_checkpoint(state, path)
    return Path(path)


def export_checkpoint_checked(
    model: nn.Module, path: str | os.PathLike, input_size: Size, half: bool = False, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export, reload, and check the reloaded model's logits against ``model``; a failed check removes the file."""
    from semseg.models import load_model

    path = export_checkpoint(model, path, half, provenance)
    meta = ModelMeta.of(model)
    report = compare_logits(model, load_model(path), parity_inputs(input_size, meta.mean, meta.std), f"{path}:")
    _fail_unless_parity(report, path, "the exported weights agree with the original")
    return report


def run_export(args: Any) -> int:
    """``semseg export (--checkpoint FILE | --model NAME --weights FILE --num-classes N) --format onnx|semseg --out FILE``."""
    if args.format not in ("onnx", "semseg"):
        raise SemsegError(f"unknown export format {args.format!r}; semseg exports onnx and semseg (an inference checkpoint)")
    if args.checkpoint is None and args.model is None:
        raise SemsegError("say what to export: --checkpoint FILE, or --model NAME --weights FILE --num-classes N")
    if args.half and args.format != "semseg":
        raise SemsegError("--half applies to --format semseg (an ONNX graph is exported in float32)")
    model = load_torch_model(args.checkpoint, args.model, args.weights, args.num_classes)
    if args.tta_scales is not None:
        check_tta_scales(args.tta_scales, "--tta-scales")
        model.pretrained_cfg = replace(model.pretrained_cfg, tta_scales=tuple(args.tta_scales))
    if args.format == "semseg":
        return _run_export_checkpoint(args, model)
    size = _pair(args.size, "--size") or ModelMeta.of(model).input_size or DEFAULT_EXPORT_SIZE
    report = export_checked(model, args.out, size, args.dynamic, args.opset)
    shape = "dynamic height and width" if args.dynamic else f"{size[0]}x{size[1]} inputs"
    print(f"exported {getattr(model, 'model_name', 'model')} to {args.out} ({shape}, opset {args.opset})")
    print(
        f"parity with PyTorch on {report['batches']} sample batches: argmax agreement "
        f"{100 * report['agreement']:.3f}%, max logit difference {report['max_abs_diff']:.2e}"
    )
    return 0


def _run_export_checkpoint(args: Any, model: nn.Module) -> int:
    from semseg.checkpoint import load_checkpoint

    if args.dynamic:
        raise SemsegError("--dynamic applies to --format onnx (a semseg checkpoint takes any size)")
    provenance = load_checkpoint(args.checkpoint) if args.checkpoint else None
    size = _pair(args.size, "--size") or ModelMeta.of(model).input_size or DEFAULT_EXPORT_SIZE
    report = export_checkpoint_checked(model, args.out, size, args.half, provenance)
    kind = "float16" if args.half else "float32"
    print(f"exported {model.model_name} to {args.out} ({kind} weights, {Path(args.out).stat().st_size / 1e6:.1f} MB)")
    print(
        f"parity with the original weights on {report['batches']} sample batches: argmax agreement "
        f"{100 * report['agreement']:.3f}%, max logit difference {report['max_abs_diff']:.2e}"
    )
    return 0
