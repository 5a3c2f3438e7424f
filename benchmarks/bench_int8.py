"""int8 against float32 on this CPU: speed and mIoU change per model and runtime, through ``semseg export --int8``.

For each model and each runtime (OpenVINO, ONNX Runtime) the model is exported
in float32 (checked against PyTorch), quantized by NNCF on the first
``--calib-count`` frames, and both graphs predict the ``--count`` labelled frames
in turns, image by image, whole images at native size (what
:func:`semseg.export.quantize_checked` measures for its accuracy gate; the gate
is off here so every row is printed). The CPU's capability (AVX2 / AVX-512,
VNNI, bf16) is printed: int8 pays off with VNNI and may not without it.

A model without trained weights (``--models NAME``, random init) gives speed
and label agreement; its mIoU means nothing and is printed as such.

    .venv/bin/python benchmarks/bench_int8.py --data /work/shared/camvid --count 40
    .venv/bin/python benchmarks/bench_int8.py --data /work/shared/camvid --models deeplabv3_resnet50 --count 10
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from semseg.export import DEFAULT_EXPORT_SIZE, quantize_checked
from semseg.models import create_model
from semseg.models.factory import default_model_path, load_torch_model


def cpu_flags() -> str:
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    names = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return ", ".join(f"{name} {'yes' if f' {name}' in flags else 'no'}" for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a CamVid root (val and valannot are used)")
    parser.add_argument("--count", type=int, default=40, help="labelled frames to score")
    parser.add_argument("--calib-count", type=int, default=20, help="of them, frames to calibrate on")
    parser.add_argument("--models", nargs="*", default=[], help="zoo models with random weights (speed only)")
    parser.add_argument("--runtimes", nargs="+", default=["openvino", "onnx"])
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}; torch capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {cpu_flags()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    frames = sorted((Path(args.data) / "val").glob("*.png"))[: args.count]
    labels = Path(args.data) / "valannot"
    models = [("default model (LR-ASPP, trained)", load_torch_model(None, None, None, None), True)]
    models += [(f"{name} (random init)", create_model(name, 11).eval(), False) for name in args.models]
    print("| model | runtime | fp32 ms/img | int8 ms/img | speed-up | fp32 mIoU | int8 mIoU | change | labels equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        calib = Path(folder) / "calib"
        calib.mkdir()
        for frame in frames:  # the gate scores what --calib names: all frames; calibration takes the first ones
            (calib / frame.name).symlink_to(frame)
        for title, model, trained in models:
            for runtime in args.runtimes:
                suffix = ".xml" if runtime == "openvino" else ".onnx"
                report = quantize_checked(model, Path(folder) / f"m{suffix}", runtime, [str(calib)], labels,
                                          DEFAULT_EXPORT_SIZE, gate=False, ignore_index=11,
                                          calibration_images=args.calib_count)
                fp32, int8 = report["fp32"], report["int8"]
                miou = (f"{100 * fp32['miou']:.2f} | {100 * int8['miou']:.2f} | {-report['miou_drop']:+.2f}" if trained
                        else "- | - | -")
                print(f"| {title} | {runtime} | {fp32['ms_per_image']:.1f} | {int8['ms_per_image']:.1f} | "
                      f"{fp32['ms_per_image'] / int8['ms_per_image']:.2f}x | {miou} | {100 * int8['agreement']:.2f}% |",
                      flush=True)
    print(f"({len(frames)} CamVid val frames at 360x480, whole images; calibrated on the first {args.calib_count}; "
          f"default model {default_model_path().name})")


if __name__ == "__main__":
    main()
